"""Starting scorer children: ``spawn`` a fresh interpreter running ``service.scorer_child``
over a socket pair, ``reap`` or ``dismiss`` one, and ``Spares``: one child kept ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

Child = tuple[subprocess.Popen[bytes], Connection]


class Spares:
    """One scorer child kept ready (imports done, waiting for a spec): a restart after a
    death, or the scorer of a new version of the index, loads in a fraction of a second
    instead of importing for seconds. Shared by every version's ScorerProcess."""

    def __init__(self) -> None:
        self._spare: Child | None = None
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> Child | None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare[0].poll() is None:
            return spare
        return None

    def prepare(self) -> None:
        """Start the next spare in the background (if there is none)."""
        threading.Thread(target=self._prepare, name="lorif-scorer-spare", daemon=True).start()

    @property
    def ready(self) -> bool:
        """A spare has done its imports and waits."""
        return self._spare is not None

    def _prepare(self) -> None:
        with self._lock:
            if self._closed or self._spare is not None:
                return
        proc, conn = spawn()
        try:
            conn.recv()  # ("idle", None): its imports are done
        except (EOFError, OSError):
            dismiss(proc, conn)
            return
        spare: Child | None = (proc, conn)
        with self._lock:
            if not self._closed and self._spare is None:
                self._spare, spare = spare, None
        if spare is not None:
            dismiss(*spare)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        spare = self.take()
        if spare is not None:
            dismiss(*spare)


def spawn() -> tuple[subprocess.Popen[bytes], Connection]:
    """A scorer child that imports its packages and waits for its spec on a socket pair."""
    # A fresh interpreter (not multiprocessing's spawn, which re-runs the caller's __main__;
    # never fork a process that holds torch). It imports the very packages this process
    # runs: -P keeps the working directory (which may hold another "service" package) off
    # its path, PYTHONPATH puts ours first.
    ours, theirs = socket.socketpair()
    here = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    with theirs:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "service.scorer_child", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env={**os.environ, "PYTHONPATH": path},
        )
    return proc, Connection(ours.detach())


def dismiss(proc: subprocess.Popen[bytes], conn: Connection) -> None:
    """End a spare: without a spec it exits when its socket closes."""
    conn.close()
    reap(proc)


def reap(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> int:
    """The child's exit code, killing it if it has not exited within ``timeout_s``."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
