"""Factor rows: their layout, storage dtypes, and pluggable stores (memory-mapped file / memory).

A row holds one example's factors for every layer, concatenated in layer order. Layer l's
segment is [L^T (c x d1, row-major) | R^T (c x d2, row-major)], so a block of consecutive rows is
one contiguous read for all layers. bf16 is stored as its raw 16-bit pattern (uint16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .capture import TrackedLayer

NUMPY_STORAGE = {"bf16": np.dtype("<u2"), "fp16": np.dtype("<f2"), "fp32": np.dtype("<f4")}
TORCH_STORAGE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def encode(values: torch.Tensor, dtype: str) -> np.ndarray:
    """float tensor -> numpy array in the storage dtype (round to nearest even for bf16/fp16)."""
    t = values.detach().to("cpu", TORCH_STORAGE[dtype]).contiguous()
    if dtype == "bf16":
        return t.view(torch.int16).numpy().view(NUMPY_STORAGE["bf16"])
    return t.numpy()


def decode(raw: np.ndarray, dtype: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """numpy array in the storage dtype -> float32 tensor on ``device``."""
    if not (raw.flags.writeable and raw.flags.c_contiguous):
        raw = np.array(raw)  # read-only maps: copy once into process memory
    t = torch.from_numpy(raw)
    if dtype == "bf16":
        t = t.view(torch.int16).view(torch.bfloat16)
    return t.to(device=device).float()


@dataclass(frozen=True)
class FactorLayout:
    """Where each layer's factors live inside a row of width ``width``."""

    layers: tuple[TrackedLayer, ...]
    rank: int

    @property
    def offsets(self) -> list[int]:
        out, pos = [], 0
        for t in self.layers:
            out.append(pos)
            pos += self.rank * (t.d1 + t.d2)
        return out

    @property
    def width(self) -> int:
        return sum(self.rank * (t.d1 + t.d2) for t in self.layers)

    def pack(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """{name: (L (B, d1, c), R (B, d2, c))} -> rows (B, width)."""
        parts = []
        for t in self.layers:
            left, right = factors[t.name]
            parts.append(left.transpose(1, 2).reshape(left.shape[0], -1))
            parts.append(right.transpose(1, 2).reshape(right.shape[0], -1))
        return torch.cat(parts, dim=1)

    def unpack(self, rows: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """rows (B, width) -> layer ``index``'s L^T (B, c, d1) and R^T (B, c, d2) (views)."""
        t, off, c = self.layers[index], self.offsets[index], self.rank
        left = rows[:, off : off + c * t.d1].reshape(-1, c, t.d1)
        right = rows[:, off + c * t.d1 : off + c * (t.d1 + t.d2)].reshape(-1, c, t.d2)
        return left, right


class FactorStore(Protocol):
    """Read access to N factor rows (the 'transport' the scorer and curvature stream from)."""

    layout: FactorLayout
    dtype: str

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Raw rows [start, stop) in the storage dtype, shape (stop - start, width)."""

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Raw rows ``ids`` (sorted, unique) in the storage dtype, shape (len(ids), width)."""


class MemoryFactorStore:
    """Rows held in a numpy array (tests, small indexes, synthetic benchmarks)."""

    def __init__(self, layout: FactorLayout, raw: np.ndarray, dtype: str):
        if raw.shape[1] != layout.width:
            raise ValueError(f"rows have width {raw.shape[1]}, layout needs {layout.width}")
        self.layout, self.raw, self.dtype = layout, raw, dtype

    @classmethod
    def from_float(cls, layout: FactorLayout, rows: torch.Tensor, dtype: str = "fp32"
                   ) -> "MemoryFactorStore":
        return cls(layout, encode(rows, dtype), dtype)

    def __len__(self) -> int:
        return self.raw.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.raw[start:stop]

    def take(self, ids: np.ndarray) -> np.ndarray:
        return self.raw[ids]


class MmapFactorStore:
    """Rows memory-mapped straight from the index file (no HDF5 library lock on the hot path)."""

    def __init__(self, layout: FactorLayout, path: str, offset: int, n: int, dtype: str):
        self.layout, self.dtype = layout, dtype
        self.array = np.memmap(path, dtype=NUMPY_STORAGE[dtype], mode="r", offset=offset,
                               shape=(n, layout.width))

    def __len__(self) -> int:
        return self.array.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def take(self, ids: np.ndarray) -> np.ndarray:
        return self.array[ids]
