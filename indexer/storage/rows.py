"""How a build hands its rows to storage: the ``RowWriter`` protocol (one index file, or the
shards of a sharded index) and ``BackgroundRows``, which encodes and writes them on a thread of
its own while the next batch is featurized."""

from __future__ import annotations

import queue
import threading
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from ..curvature.base import Basis
from ..engine.kronecker import KroneckerMoments
from ..engine.layout import FactorLayout
from .codec import TORCH_STORAGE, encode_rows
from .manifest import Manifest
from .store import FactorStore

Rows = npt.NDArray[np.int64]


class RowWriter(Protocol):
    """Where a build's featurized rows go: one index file (``IndexWriter``) or the shards of
    a sharded index (``storage.shards.ShardedWriter``). Row ids count from the writer's first
    new row."""

    @property
    def layout(self) -> FactorLayout: ...

    @property
    def n(self) -> int:
        """Rows of the index once published."""
        ...

    def mine(self) -> npt.NDArray[np.bool_]:
        """Bool (new rows,): the rows this process writes."""
        ...

    def pending(self) -> npt.NDArray[np.bool_]:
        """Bool (new rows,): the rows this process still has to compute."""
        ...

    def spans(self) -> dict[int, Rows]:
        """The rows of each unfinished part this process writes, by part number (a part is
        finished, with its K-FAC moments, as soon as its rows are written)."""
        ...

    def write_rows(
        self, rows: npt.NDArray[np.integer[Any]], values: npt.NDArray[np.generic]
    ) -> None: ...

    def finish(self, j: int, moments: KroneckerMoments | None = None, threads: int = 1) -> None:
        """Part ``j``'s rows are all written: make it final (with its rows' ``moments``)."""
        ...

    def store(self) -> FactorStore:
        """The rows this process streams for the curvature."""
        ...

    def moments(self) -> KroneckerMoments:
        """The K-FAC moments of the rows ``store`` streams."""
        ...

    def publish(self, manifest: Manifest, curvature: Basis, threads: int = 1) -> str:
        """Write the basis, the checksums and the final manifest; returns the fingerprint."""
        ...


class BackgroundRows:
    """Encodes and writes batches of factor rows on a thread of its own, so the next batch's
    forward and backward start at once; at most ``depth`` batches wait. On CUDA the caller's
    device-to-host copy is asynchronous (pinned memory) and this thread waits for its event.
    An error on the thread is raised by the next ``submit`` or by ``close``."""

    def __init__(self, writer: RowWriter, dtype: str, depth: int = 2):
        self.writer, self.dtype = writer, dtype
        self.jobs: queue.Queue[tuple[Any, torch.Tensor, Any] | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="lorif-row-writer", daemon=True)
        self.thread.start()

    def submit(self, rows: npt.NDArray[np.integer[Any]], values: torch.Tensor) -> None:
        """Queue ``values`` (B, width) float rows for ``rows`` (any device)."""
        self._raise()
        # Rounded to the storage dtype here, on the caller's thread and device, so this thread
        # runs no torch kernel: its own OpenMP team fought the caller's for the cores (a CPU
        # build on 2 cores took 2.1x as long); on CUDA the copy to the host is halved too.
        values = values.detach().to(TORCH_STORAGE[self.dtype])
        event = None
        if values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record()
            values = host
        self.jobs.put((rows, values, event))

    def close(self) -> None:
        """Wait for every queued batch to be written; raise the thread's error if any."""
        self.jobs.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def wait(self) -> None:
        """Block until every batch submitted so far is written; raise the thread's error."""
        self.jobs.join()
        self._raise()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                if self.error is None:  # else drain: the caller sees the first error
                    rows, values, event = job
                    if event is not None:
                        event.synchronize()
                    self.writer.write_rows(rows, encode_rows(values, self.dtype))
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                self.error = e
            finally:
                self.jobs.task_done()
