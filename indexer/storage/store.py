"""Factor stores: N rows of factors in their storage dtype, memory-mapped from an index file or
held in memory. Both implement the engine's RowSource (decoded float32 blocks, streamed by a
reader thread) on top of two raw reads, ``read`` (a range) and ``take`` (sorted ids)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ..engine.layout import FactorLayout
from .codec import NUMPY_STORAGE, RawRows, decode_rows, encode_rows
from .streaming import iter_blocks


class FactorStore:
    """Read access to N factor rows; subclasses provide ``read``, ``take`` and ``__len__``."""

    def __init__(self, layout: FactorLayout, dtype: str):
        self._layout, self.dtype = layout, dtype

    @property
    def layout(self) -> FactorLayout:
        return self._layout

    @property
    def row_bytes(self) -> int:
        return self.layout.width * NUMPY_STORAGE[self.dtype].itemsize

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, start: int, stop: int) -> RawRows:
        """Raw rows [start, stop) in the storage dtype, shape (stop - start, width)."""
        raise NotImplementedError

    def take(self, ids: npt.NDArray[np.int64]) -> RawRows:
        """Raw rows ``ids`` (sorted, unique) in the storage dtype, shape (len(ids), width)."""
        raise NotImplementedError

    def blocks(
        self, block_rows: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[int, torch.Tensor]]:
        return iter_blocks(self, block_rows, device)

    def rows(self, ids: npt.NDArray[np.int64], device: torch.device | str = "cpu") -> torch.Tensor:
        return decode_rows(self.take(ids), self.dtype, device)


class MemoryFactorStore(FactorStore):
    """Rows held in a numpy array (tests, small indexes, synthetic benchmarks)."""

    def __init__(self, layout: FactorLayout, raw: RawRows, dtype: str):
        if raw.shape[1] != layout.width:
            raise ValueError(f"rows have width {raw.shape[1]}, layout needs {layout.width}")
        super().__init__(layout, dtype)
        self.raw = raw

    @classmethod
    def from_float(
        cls, layout: FactorLayout, rows: torch.Tensor, dtype: str = "fp32"
    ) -> MemoryFactorStore:
        return cls(layout, encode_rows(rows, dtype), dtype)

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    def read(self, start: int, stop: int) -> RawRows:
        return self.raw[start:stop]

    def take(self, ids: npt.NDArray[np.int64]) -> RawRows:
        return self.raw[ids]


class MmapFactorStore(FactorStore):
    """Rows memory-mapped straight from a file (no HDF5 library lock on the hot path)."""

    def __init__(self, layout: FactorLayout, path: str, offset: int, n: int, dtype: str):
        super().__init__(layout, dtype)
        self.array: np.memmap[Any, np.dtype[Any]] = np.memmap(
            path, dtype=NUMPY_STORAGE[dtype], mode="r", offset=offset, shape=(n, layout.width)
        )

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def read(self, start: int, stop: int) -> RawRows:
        return self.array[start:stop]

    def take(self, ids: npt.NDArray[np.int64]) -> RawRows:
        return self.array[ids]
