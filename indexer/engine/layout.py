"""Tracked layers, the layout of one example's factors in a row, and the row source the
engine streams from (implemented by :mod:`indexer.storage`).

A row holds one example's factors for every layer, concatenated in layer order. Layer l's
segment is [L^T (c_l x d1, row-major) | R^T (c_l x d2, row-major)], so a block of consecutive
rows is one contiguous read for all layers. The rank c_l is the same for every layer (``--rank``)
or chosen per layer by a storage budget (``--bytes-per-example``, ``engine/budget.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch


@dataclass(frozen=True)
class TrackedLayer:
    """One tracked linear map (in_dim -> out_dim) and its projection sizes d1, d2."""

    name: str
    in_dim: int
    out_dim: int
    d1: int
    d2: int

    @property
    def D(self) -> int:
        return self.d1 * self.d2


@dataclass(frozen=True)
class FactorLayout:
    """Where each layer's factors live inside a row of width ``width``; ``ranks[l]`` is layer
    l's c (``uniform`` builds the common case of one c for all)."""

    layers: tuple[TrackedLayer, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.ranks) != len(self.layers) or min(self.ranks, default=1) < 1:
            raise ValueError(f"one rank >= 1 per layer, not {self.ranks} for {len(self.layers)}")

    @classmethod
    def uniform(cls, layers: tuple[TrackedLayer, ...], rank: int) -> FactorLayout:
        return cls(layers, (rank,) * len(layers))

    @property
    def max_rank(self) -> int:
        return max(self.ranks, default=1)

    @property
    def is_uniform(self) -> bool:
        return len(set(self.ranks)) <= 1

    @property
    def ranks_by_name(self) -> dict[str, int]:
        """{layer name: c}."""
        return {t.name: c for t, c in zip(self.layers, self.ranks, strict=True)}

    @property
    def offsets(self) -> list[int]:
        """Start column of each layer's segment."""
        out, pos = [], 0
        for t, c in zip(self.layers, self.ranks, strict=True):
            out.append(pos)
            pos += c * (t.d1 + t.d2)
        return out

    @property
    def width(self) -> int:
        return sum(c * (t.d1 + t.d2) for t, c in zip(self.layers, self.ranks, strict=True))

    def pack(self, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """{name: (L (B, d1, c), R (B, d2, c))} -> rows (B, width)."""
        parts = []
        for t in self.layers:
            left, right = factors[t.name]
            parts.append(left.transpose(1, 2).reshape(left.shape[0], -1))
            parts.append(right.transpose(1, 2).reshape(right.shape[0], -1))
        return torch.cat(parts, dim=1)

    def unpack(self, rows: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """rows (B, width) -> layer ``index``'s L^T (B, c, d1) and R^T (B, c, d2) (views)."""
        t, off, c = self.layers[index], self.offsets[index], self.ranks[index]
        left = rows[:, off : off + c * t.d1].reshape(-1, c, t.d1)
        right = rows[:, off + c * t.d1 : off + c * (t.d1 + t.d2)].reshape(-1, c, t.d2)
        return left, right


class RowSource(Protocol):
    """N factor rows as float32 tensors: what scoring and curvature stream from."""

    @property
    def layout(self) -> FactorLayout: ...

    def __len__(self) -> int: ...

    def blocks(
        self, block_rows: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, rows (B, width) float32 on device)`` for consecutive blocks of at most
        ``block_rows`` rows; a yielded block may be reused once the next one is requested."""
        ...

    def rows(self, ids: npt.NDArray[np.int64], device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows ``ids`` (sorted, unique) as float32 (len(ids), width) on ``device``."""
        ...
