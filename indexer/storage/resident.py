"""Resident mode: every factor row held in device memory in its storage dtype, packed by layer
shape, and scanned there.

For each shape group (the layers of one (d1, d2, c), ``engine.kernels.layer_groups``) the rows'
factors are two contiguous tensors: L (G, N, c, d1) and R (G, N, c, d2). A scan reads no file,
copies nothing from the host and decodes nothing: the fused kernel (``engine/triton_scan.py``)
or the batched GEMMs of ``engine/packed_scan.py`` take the packs as they are, each tile one
sequential read per layer. Everything else a store does (decoded blocks for the curvature or
the norms, single rows for explanations and the low-rank path's exact re-score) reassembles
rows from the packs. ``fits`` says whether the rows and a headroom for the model fit the
device's free memory; on CPU, ``auto`` keeps the memory map instead (the page cache already is
the resident copy).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from ..engine.kernels import layer_groups
from ..engine.layout import FactorLayout
from ..engine.packed_scan import Pack  # (group, L (G,N,c,d1), R (G,N,c,d2))
from ..errors import ConfigError
from .codec import NUMPY_STORAGE, TORCH_HOST, TORCH_STORAGE, RawRows, encode_rows
from .store import FactorStore

Resident = Literal["auto", "on", "off"]
RESIDENT_BLOCK_ROWS = 65536  # rows per decoded block (reassembled for what is not the scan)
HEADROOM_BYTES = 2 << 30  # left free for the model's forward/backward and the query batch


class ResidentFactorStore(FactorStore):
    """All rows on ``device``, packed per shape group (see the module docstring)."""

    def __init__(self, store: FactorStore, device: torch.device | str, chunk_rows: int = 65536):
        super().__init__(store.layout, store.dtype)
        self.device = torch.device(device)
        self.n = len(store)
        torch_dtype = TORCH_STORAGE[self.dtype]
        self.groups = layer_groups(store.layout, str(self.device))
        self.packs: list[Pack] = [
            (
                g,
                torch.empty((len(g.layers), self.n, g.c, g.d1), dtype=torch_dtype, device=device),
                torch.empty((len(g.layers), self.n, g.c, g.d2), dtype=torch_dtype, device=device),
            )
            for g in self.groups
        ]
        staging = torch.empty(
            (min(chunk_rows, max(self.n, 1)), store.layout.width),
            dtype=TORCH_HOST[self.dtype],
            pin_memory=self.device.type == "cuda",
        )
        host = staging.numpy().view(NUMPY_STORAGE[self.dtype])
        for start in range(0, self.n, chunk_rows):
            stop = min(start + chunk_rows, self.n)
            np.copyto(host[: stop - start], store.read(start, stop))
            rows = staging[: stop - start].to(self.device).view(torch_dtype)
            for g, left, right in self.packs:
                b, n_layers = stop - start, len(g.layers)
                lv = rows.index_select(1, g.left_cols).view(b, n_layers, g.c, g.d1)
                rv = rows.index_select(1, g.right_cols).view(b, n_layers, g.c, g.d2)
                left[:, start:stop].copy_(lv.transpose(0, 1))
                right[:, start:stop].copy_(rv.transpose(0, 1))

    @classmethod
    def of_packs(cls, layout: FactorLayout, dtype: str, packs: list[Pack]) -> ResidentFactorStore:
        """A store over packs made elsewhere (e.g. rows generated on the device by a
        benchmark), one per ``layer_groups(layout)`` group in order."""
        self = cls.__new__(cls)
        FactorStore.__init__(self, layout, dtype)
        self.device, self.packs = packs[0][1].device, packs
        self.n, self.groups = packs[0][1].shape[1], tuple(g for g, _, _ in packs)
        return self

    def __len__(self) -> int:
        return self.n

    def packed(self, start: int = 0, stop: int | None = None) -> list[Pack]:
        """The packs of rows [start, stop) (views)."""
        stop = self.n if stop is None else stop
        return [(g, left[:, start:stop], right[:, start:stop]) for g, left, right in self.packs]

    def _assemble(self, select: slice | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows ``select`` (a slice, or sorted ids on the device) as (b, width) ``dtype``."""
        parts = [(g, left[:, select], right[:, select]) for g, left, right in self.packs]
        b = parts[0][1].shape[1] if parts else 0
        out = torch.empty((b, self.layout.width), dtype=dtype, device=self.device)
        for g, left, right in parts:
            out[:, g.left_cols] = left.transpose(0, 1).reshape(b, -1).to(dtype)
            out[:, g.right_cols] = right.transpose(0, 1).reshape(b, -1).to(dtype)
        return out

    def read(self, start: int, stop: int) -> RawRows:
        return encode_rows(self._assemble(slice(start, stop), torch.float32), self.dtype)

    def take(self, ids: npt.NDArray[np.int64]) -> RawRows:
        index = torch.as_tensor(ids, device=self.device)
        return encode_rows(self._assemble(index, torch.float32), self.dtype)

    def blocks(
        self, block_rows: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Decoded float32 blocks (reassembled rows) of at least ``RESIDENT_BLOCK_ROWS``, for
        what is not the scan."""
        if torch.device(device) != self.device:
            raise ValueError(f"rows are resident on {self.device}, not {device}")
        step = max(1, min(max(block_rows, RESIDENT_BLOCK_ROWS), self.n))
        for start in range(0, self.n, step):
            yield start, self._assemble(slice(start, min(start + step, self.n)), torch.float32)

    def rows(self, ids: npt.NDArray[np.int64], device: torch.device | str = "cpu") -> torch.Tensor:
        index = torch.as_tensor(ids, device=self.device)
        return self._assemble(index, torch.float32).to(device)


def resident_bytes(store: FactorStore, block_rows: int = RESIDENT_BLOCK_ROWS) -> int:
    """Device memory a resident copy needs: the rows and one decoded float32 block."""
    return len(store) * store.row_bytes + min(block_rows, len(store)) * store.layout.width * 4


def fits(store: FactorStore, device: torch.device) -> bool:
    """True when the resident copy fits the device's free memory with ``HEADROOM_BYTES`` left."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return resident_bytes(store) + HEADROOM_BYTES <= free


def make_resident(store: FactorStore, device: torch.device, mode: Resident) -> FactorStore:
    """``store`` itself (streamed) or a resident copy on ``device``: ``on`` always (ConfigError
    when it does not fit a GPU), ``auto`` on CUDA when it fits, ``off`` never."""
    if mode == "on" and device.type == "cuda" and not fits(store, device):
        free, _ = torch.cuda.mem_get_info(device)
        raise ConfigError(
            f"resident factors need {resident_bytes(store) / 2**30:.1f} GiB plus "
            f"{HEADROOM_BYTES / 2**30:.0f} GiB of headroom; {free / 2**30:.1f} GiB of {device} "
            "is free (use resident off or auto to stream them)"
        )
    if mode == "on" or (mode == "auto" and fits(store, device)):
        return ResidentFactorStore(store, device)
    return store
