"""The scorer process's main (``python -m service.scorer_child FD``, started by
``scorer_process.ScorerProcess``): receive the spec, load, report ready, answer calls."""

from __future__ import annotations

import signal

# Ctrl+C reaches the whole process group; the parent decides when the scorer stops.
if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)

import contextlib
import gc
import json
import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from indexer import (
    Example,
    Index,
    IndexFormatError,
    Manifest,
    QueryOptions,
    preload_libraries,
    use_threads,
)

from .scorer import BatchScorer
from .scorer_process import ScorerSpec

WARM_UP = Example(completion="warm up the scorer.")


def main(conn: Connection) -> None:
    """The child's main: receive the spec, load, report ready (the bytes one scan reads and
    where the rows are), then serve calls until "stop" or until the parent is gone."""
    preload_libraries()  # a spare does its imports before it is needed
    try:
        conn.send(("idle", None))
        spec: ScorerSpec = conn.recv()
    except (EOFError, OSError):  # a spare no longer needed
        return
    try:
        use_threads(spec.threads)
        manifest = None if spec.manifest is None else Manifest.from_dict(json.loads(spec.manifest))
        index = Index(spec.index, manifest)
        if index.fingerprint != spec.fingerprint:
            index.close()
            raise IndexFormatError(
                f"{spec.index} is no longer the version the service opened (fingerprint "
                f"{index.fingerprint}, expected {spec.fingerprint})"
            )
        scorer = BatchScorer.open(index, spec.model, spec.device, spec.resident, spec.block_rows)
        engine = scorer.engine
        # The first scan pays one-time costs (allocations, kernels' first calls): here, at
        # the parent's priority, not in the first query after a restart under load.
        scorer.score([WARM_UP], [QueryOptions(k=1)])
    except BaseException as e:  # noqa: BLE001 - the parent reports it
        _send(conn, ("error", _picklable(e)))
        return
    ready = {
        "scan_bytes": index.row_bytes * len(engine.store),
        "placement": (str(engine.device), engine.resident),
    }
    if not _send(conn, ("ready", ready)):
        return
    # Loaded at the parent's priority (a restart is back fast, also under load); scans yield.
    with contextlib.suppress(OSError):
        os.nice(spec.nice)
    gc.collect()
    gc.freeze()  # the model's objects: keep full collections off them (as in the parent)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        op, args = message[0], message[1:]
        if op == "stop":
            break
        try:
            value = scorer.score(*args) if op == "score" else scorer.explain(*args)
            reply: tuple[str, Any] = ("ok", value)
        except Exception as e:  # noqa: BLE001 - the error belongs to the caller
            reply = ("error", _picklable(e))
        if not _send(conn, reply):
            break
    scorer.close()


def _send(conn: Connection, message: tuple[str, Any]) -> bool:
    """False when the parent is gone."""
    try:
        conn.send(message)
        return True
    except (OSError, ValueError):
        return False


def _picklable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling (the library's errors do), else a RuntimeError with its
    text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main(Connection(int(sys.argv[1])))
