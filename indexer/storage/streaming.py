"""Block streaming: a reader thread fills a ring of reused host buffers while the caller computes.

The reader thread copies raw rows (storage dtype) from the store into one of ``depth`` buffers
(page faults and disk reads happen there, off the compute thread; numpy and torch release the
GIL for the copies). With ``readers`` > 1 (the CUDA default) each block is copied in that many
stripes by a small thread pool: one thread reading a memory map stalls on one page fault at a
time, several keep the page cache (or the disk's queue) busy. On CPU the reader thread also
decodes the block into a reused float32 buffer, so decoding overlaps the previous block's
GEMMs and no block allocates fresh memory. On CUDA the raw buffers are pinned and the
host-to-device copy runs on its own stream, so transfers overlap the GEMMs of the previous
block; the device decodes.

Yielded rows live in a reused buffer: they are valid until the next block is requested (copy
them to keep them).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch

from .codec import NUMPY_STORAGE, TORCH_HOST, decode_into

if TYPE_CHECKING:
    from .store import FactorStore

_DONE = object()
Ready = tuple[int, int, int] | BaseException | object  # (start, rows, slot), error or _DONE


class BlockReader:
    """Iterate ``(start, rows float32 (B, width) on device)`` over consecutive blocks of a store.

    ``depth`` host buffers of ``block_rows x width`` (float32 on CPU, the storage dtype and
    pinned on CUDA) are allocated once and reused; at most ``depth - 1`` blocks are read ahead
    of the one being scored.
    """

    def __init__(
        self,
        store: FactorStore,
        block_rows: int,
        device: torch.device | str = "cpu",
        depth: int = 3,
        readers: int = 0,
    ):
        if block_rows < 1 or depth < 2 or readers < 0:
            raise ValueError("block_rows must be >= 1, depth >= 2 and readers >= 0")
        self.store, self.device = store, torch.device(device)
        self.readers = readers or default_readers(self.device)
        self.block_rows = max(1, min(block_rows, len(store)))
        cuda = self.device.type == "cuda"
        shape = (self.block_rows, store.layout.width)
        # CUDA: raw pinned buffers, decoded on the device. CPU: float32 buffers the reader
        # thread decodes straight into from the store (one pass over the bytes).
        self.buffers = [
            torch.empty(
                shape, dtype=TORCH_HOST[store.dtype] if cuda else torch.float32, pin_memory=cuda
            )
            for _ in range(depth)
        ]
        self.views = [
            b.numpy().view(NUMPY_STORAGE[store.dtype]) if cuda else b.numpy() for b in self.buffers
        ]
        self.copy_stream = torch.cuda.Stream(self.device) if cuda else None  # type: ignore[no-untyped-call]

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        free: queue.Queue[int] = queue.Queue()
        ready: queue.Queue[Ready] = queue.Queue()
        for slot in range(len(self.buffers)):
            free.put(slot)
        stop = threading.Event()
        pool = (
            ThreadPoolExecutor(self.readers, thread_name_prefix="lorif-stripe")
            if self.readers > 1
            else None
        )
        thread = threading.Thread(
            target=self._read,
            args=(free, ready, stop, pool),
            name="lorif-block-reader",
            daemon=True,
        )
        thread.start()
        held = None  # CPU: the slot the consumer is reading, freed when it asks for more
        try:
            while True:
                item = ready.get()
                if held is not None:
                    free.put(held)
                    held = None
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, tuple)
                start, n, slot = item
                if self.copy_stream is None:
                    held = slot
                    yield start, self.buffers[slot][:n]
                else:
                    rows = self._to_device(self.buffers[slot][:n])
                    free.put(slot)
                    yield start, rows
        finally:
            stop.set()
            free.put(-1)  # wake the reader if it waits for a buffer
            thread.join()
            if pool is not None:
                pool.shutdown()

    def _read(
        self,
        free: queue.Queue[int],
        ready: queue.Queue[Ready],
        stop: threading.Event,
        pool: ThreadPoolExecutor | None,
    ) -> None:
        try:
            for start in range(0, len(self.store), self.block_rows):
                slot = free.get()
                if stop.is_set() or slot < 0:
                    return
                stop_row = min(start + self.block_rows, len(self.store))
                n = stop_row - start
                raw, out = self.store.read(start, stop_row), self.views[slot][:n]
                if pool is None:
                    self._fill(out, raw)
                else:  # stripes of rows, copied in parallel (list() re-raises their errors)
                    cuts = np.linspace(0, n, self.readers + 1).astype(int)
                    parts = [
                        (out[a:b], raw[a:b])
                        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
                        if b > a
                    ]
                    list(pool.map(lambda part: self._fill(*part), parts))
                ready.put((start, n, slot))
            ready.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - re-raised on the consumer's thread
            ready.put(e)

    def _fill(self, out: np.ndarray, raw: np.ndarray) -> None:
        """raw rows -> a host buffer: decoded to float32 (CPU) or copied as stored (CUDA)."""
        if self.copy_stream is None:
            decode_into(out, raw, self.store.dtype)
        else:
            np.copyto(out, raw)

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        """CUDA: pinned host block -> float32 on the device; the buffer is free after."""
        assert self.copy_stream is not None
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            raw = host.to(self.device, non_blocking=True)
            done = torch.cuda.Event()  # type: ignore[no-untyped-call]
            done.record(self.copy_stream)
        compute.wait_event(done)
        raw.record_stream(compute)
        done.synchronize()  # the pinned buffer may be refilled only once the copy has landed
        return _as_float(raw, self.store.dtype)


def _as_float(raw: torch.Tensor, dtype: str) -> torch.Tensor:
    return (raw.view(torch.bfloat16) if dtype == "bf16" else raw).float()


def default_readers(device: torch.device) -> int:
    """Copy threads per block: 1 on CPU (the cores are the GEMMs'), up to 8 on CUDA."""
    if device.type != "cuda":
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def iter_blocks(
    store: FactorStore,
    block_rows: int,
    device: torch.device | str = "cpu",
    depth: int = 3,
    readers: int = 0,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, float32 rows (B, width)) for consecutive blocks of the store, read ahead."""
    if len(store) == 0:
        return iter(())
    return iter(BlockReader(store, block_rows, device, depth, readers))
