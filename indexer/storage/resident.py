"""Resident mode: every factor row held in device memory in its storage dtype, scanned there.

A scan then reads no file and copies nothing from the host: each block is decoded on the
device (bf16/fp16 -> float32, one elementwise kernel into a reused buffer) and scored. Blocks
are large (``RESIDENT_BLOCK_ROWS``) so the scan is not launch-bound. ``fits`` says whether the
rows, the decoded block and a headroom for the model fit the device's free memory; on CPU,
``auto`` keeps the memory map instead (the page cache already is the resident copy).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from ..errors import ConfigError
from .codec import NUMPY_STORAGE, TORCH_HOST, TORCH_STORAGE, RawRows, encode_rows
from .store import FactorStore

Resident = Literal["auto", "on", "off"]
RESIDENT_BLOCK_ROWS = 65536
HEADROOM_BYTES = 2 << 30  # left free for the model's forward/backward and the query batch


class ResidentFactorStore(FactorStore):
    """All rows as one (N, width) tensor in the storage dtype on ``device``."""

    def __init__(self, store: FactorStore, device: torch.device | str, chunk_rows: int = 65536):
        super().__init__(store.layout, store.dtype)
        self.device = torch.device(device)
        n, width = len(store), store.layout.width
        torch_dtype = TORCH_STORAGE[self.dtype]
        self.data = torch.empty((n, width), dtype=torch_dtype, device=self.device)
        # one (pinned, on CUDA) staging buffer: the file's pages go through it chunk by chunk
        staging = torch.empty(
            (min(chunk_rows, max(n, 1)), width),
            dtype=TORCH_HOST[self.dtype],
            pin_memory=self.device.type == "cuda",
        )
        host = staging.numpy().view(NUMPY_STORAGE[self.dtype])
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            np.copyto(host[: stop - start], store.read(start, stop))
            self.data[start:stop].copy_(staging[: stop - start].view(torch_dtype))

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def read(self, start: int, stop: int) -> RawRows:
        return encode_rows(self.data[start:stop], self.dtype)

    def take(self, ids: npt.NDArray[np.int64]) -> RawRows:
        return encode_rows(self.data[torch.as_tensor(ids, device=self.device)], self.dtype)

    def blocks(
        self, block_rows: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Decoded float32 blocks of at least ``RESIDENT_BLOCK_ROWS`` rows, in one reused
        buffer (``device`` must be the store's)."""
        if torch.device(device) != self.device:
            raise ValueError(f"rows are resident on {self.device}, not {device}")
        n = len(self)
        size = max(1, min(max(block_rows, RESIDENT_BLOCK_ROWS), n))
        buffer = torch.empty((size, self.layout.width), dtype=torch.float32, device=self.device)
        for start in range(0, n, size):
            stop = min(start + size, n)
            out = buffer[: stop - start]
            out.copy_(self.data[start:stop])
            yield start, out

    def rows(self, ids: npt.NDArray[np.int64], device: torch.device | str = "cpu") -> torch.Tensor:
        return self.data[torch.as_tensor(ids, device=self.device)].float().to(device)


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
