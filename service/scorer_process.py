"""The scorer in a process of its own (``scorer = "process"``, the default).

Why a process: the model's forward and backward are Python code, and on a worker thread of the
serving process they held the GIL and the cores the event loop needs, so answers from the
cache waited behind scans (p99 17-60 ms with a saturated scorer on 2 cores). In a child process
at a lower CPU priority (``scorer_nice``, taken once it has loaded) the event loop keeps its own
GIL and wins the cores. The child opens the very version of the index the parent verified (a
sharded index's manifest travels in the spec) and loads the model; the parent keeps only the
index (examples, metadata) and the tokenizer.

One call at a time over a pipe: ``("score", queries, options)`` or ``("explain", ...)`` ->
``("ok", value)`` or ``("error", exception)``. The child's death is noticed at once (a watcher
thread waits on it); the call in flight and every call until it is back raise
ScorerUnavailable (503 with Retry-After); it is restarted at once, with back-off while restarts
fail, and ``on_stale`` is told when its version's files are gone (the server opens the new).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from indexer import (
    Example,
    Explanation,
    IndexFormatError,
    QueryOptions,
    Resident,
)

from .scorer import Scored
from .scorer_spawn import Spares, reap, spawn

log = logging.getLogger("lorif")
RETRY_AFTER_S = 5
MAX_BACKOFF_S = 30.0


class ScorerUnavailable(Exception):
    """The scorer process is not running (it died and is being restarted)."""

    retry_after = RETRY_AFTER_S


@dataclass(frozen=True)
class ScorerSpec:
    """What the child needs to build its BatchScorer (pickled to it)."""

    index: str
    fingerprint: str  # of the version the parent verified
    manifest: str | None  # a sharded index's manifest (JSON) of that version: opened as it is
    model: str | None
    device: str
    threads: int
    block_rows: int
    resident: Resident
    nice: int


class ScorerProcess:
    """The ``Scoring`` calls, answered by a child process (see the module docstring)."""

    def __init__(
        self,
        spec: ScorerSpec,
        on_scan: Callable[[int, int, float], None] | None = None,
        on_stale: Callable[[], None] | None = None,
        spares: Spares | None = None,
    ) -> None:
        self.spec, self.on_scan, self.on_stale = spec, on_scan, on_stale
        self.spares = spares  # children with their imports done: a start takes one
        self.restarts = 0
        self.down_since: float | None = None  # time.monotonic() of the death being restarted
        self._lock = threading.Lock()  # one call on the pipe at a time
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._scan_bytes = 0
        self.placement = ("", False)  # (device, resident) as the child reports them
        self._closed = threading.Event()

    @property
    def available(self) -> bool:
        return self._conn is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, restart: bool = False) -> None:
        """Start the child (the spare one, when there is one: its imports are done) and wait
        until it has loaded the index and model; its load error (or ScorerUnavailable when it
        dies while loading) is raised here. Then prepare the next spare."""
        t0 = time.monotonic()
        spare = self.spares.take() if self.spares else None
        proc, conn = spare or spawn()
        try:
            if spare is None:
                conn.recv()  # ("idle", None): its imports are done
            conn.send(self.spec)
            status, value = conn.recv()
        except (EOFError, OSError):
            conn.close()
            raise ScorerUnavailable(
                f"the scorer process exited with code {reap(proc)} while loading"
            ) from None
        if status != "ready":
            conn.close()
            reap(proc)
            raise value
        with self._lock:
            self._conn, self._proc, self.down_since = conn, proc, None
            self.restarts += restart  # counted as it becomes available, not after
            self._scan_bytes, self.placement = value["scan_bytes"], value["placement"]
        threading.Thread(
            target=self._watch, args=(proc,), name="lorif-scorer-watch", daemon=True
        ).start()
        if self.spares is not None:
            self.spares.prepare()
        device, resident = self.placement
        log.info(
            "scorer process %d ready in %.1f s on %s (nice +%d); factor rows %s",
            proc.pid,
            time.monotonic() - t0,
            device,
            self.spec.nice,
            f"resident ({self._scan_bytes / 2**30:.2f} GiB)" if resident else "streamed",
        )

    def score(self, queries: list[Example], options: Sequence[QueryOptions]) -> list[Scored]:
        scored: list[Scored] = self._call("score", queries, list(options))
        if self.on_scan and scored:
            self.on_scan(len(queries), self._scan_bytes, scored[0].scan_s)
        return scored

    def explain(self, query: Example, example_id: int, damping: float | None = None) -> Explanation:
        explanation: Explanation = self._call("explain", query, example_id, damping)
        return explanation

    def close(self) -> None:
        """Stop the child (it finishes the call in flight first) and any restart."""
        self._closed.set()
        with self._lock:
            conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
            conn.close()
        if proc is not None:
            reap(proc)

    def _call(self, *message: Any) -> Any:
        with self._lock:
            if self._conn is None:
                raise ScorerUnavailable("the scorer process is restarting")
            try:
                self._conn.send(message)
                status, value = self._conn.recv()
            except (EOFError, OSError):
                self._died()
                raise ScorerUnavailable("the scorer process died; it is restarting") from None
        if status == "error":
            raise value
        return value

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Notice the child's death at once, also while no call is in flight (readiness and
        ``lorif_scorer_up`` say so, and the restart begins, before the next query)."""
        proc.wait()
        with self._lock:
            if self._proc is proc:  # not stopped by close(), not noticed by a call already
                self._died()

    def _died(self) -> None:
        """Called with the lock held: forget the dead child, restart in the background."""
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        self.down_since = time.monotonic()
        if conn is not None:
            conn.close()
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(1)
        log.error("the scorer process died (exit code %s); restarting it", code)
        if not self._closed.is_set():
            threading.Thread(target=self._restart, name="lorif-scorer-restart", daemon=True).start()

    def _restart(self) -> None:
        delay = 1.0
        while not self._closed.is_set():
            try:
                self.start(restart=True)
            except Exception as e:  # noqa: BLE001 - logged; retried with back-off
                log.error("restarting the scorer process failed: %s; retry in %.0f s", e, delay)
                if isinstance(e, IndexFormatError) and self.on_stale is not None:
                    self.on_stale()  # its version is gone from disk: the server opens the new
                if self._closed.wait(delay):
                    return
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            log.info("the scorer process is back (restart %d)", self.restarts)
            if self._closed.is_set():  # closed while it was loading
                self.close()
            return
