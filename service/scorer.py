"""Batched scoring: featurize and precondition a batch of distinct queries, then one scan of the
factor store through the indexer's query engine serves the whole batch. ``Scoring`` is what the
batcher's worker thread calls: a ``BatchScorer`` in this process (``scorer = "thread"``) or the
same scorer in a process of its own (``scorer_process.ScorerProcess``). Each query comes with
its ``QueryOptions``, canonical for the index (``QueryOptions.for_index``): nothing here checks
them again."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from indexer import (
    Example,
    Explanation,
    Index,
    QueryEngine,
    QueryOptions,
    Resident,
    ScoreResult,
    Totals,
)

PLAIN = QueryOptions()  # the build's damping, no normalisation, the exact scan


@dataclass
class Scored:
    """Top-k of one query in both directions, with its timings."""

    proponent_ids: npt.NDArray[np.int64]
    proponent_scores: npt.NDArray[np.float32]
    opponent_ids: npt.NDArray[np.int64]
    opponent_scores: npt.NDArray[np.float32]
    featurize_s: float
    scan_s: float
    queue_s: float = 0.0
    residual: float | None = None  # low-rank path: ||P - P_cq||_F / ||P||_F of the query
    n_tokens: int = 0  # the query's token count
    histogram: npt.NDArray[np.int64] | None = None  # (N_BINS,) of all N scores (summary.py)
    totals: Totals | None = None  # all N scores summed per value of options.totals_by

    @property
    def finite(self) -> bool:
        return bool(
            np.isfinite(self.proponent_scores).all() and np.isfinite(self.opponent_scores).all()
        )


class Scoring(Protocol):
    """The worker's calls (one at a time, from the batcher's worker thread)."""

    def score(self, queries: list[Example], options: Sequence[QueryOptions]) -> list[Scored]:
        """Each query's own top-k as its ``options`` say: the same answer it would get scanned
        alone."""

    def explain(self, query: Example, example_id: int, damping: float | None = None) -> Explanation:
        """One (query, example) score split over both texts' tokens (canonical damping)."""

    def close(self) -> None:
        """Release the model, the device and the index."""

    @property
    def available(self) -> bool:
        """Calls can be made now."""

    @property
    def placement(self) -> tuple[str, bool]:
        """(torch device, factor rows resident in its memory)."""

    @property
    def down_since(self) -> float | None:
        """``time.monotonic()`` when it stopped taking calls (None while it takes them)."""


def answers(
    engine: QueryEngine,
    res: ScoreResult,
    ks: Sequence[int],
    times: tuple[float, float, float],
    on_scan: Callable[[int, int, float], None] | None,
) -> list[Scored]:
    """Each query's own top-``ks[i]`` of one scan's result (``times``: started, features
    ready, scan done), reporting the scan to ``on_scan``."""
    t0, t1, t2 = times
    if on_scan:
        on_scan(len(ks), engine.index.row_bytes * len(engine.store), t2 - t1)
    return [
        Scored(
            res.proponent_ids[i, : ks[i]],
            res.proponent_scores[i, : ks[i]],
            res.opponent_ids[i, : ks[i]],
            res.opponent_scores[i, : ks[i]],
            t1 - t0,
            t2 - t1,
            residual=None if res.residual is None else float(res.residual[i]),
            histogram=None if res.histogram is None else res.histogram[i],
            totals=None if res.totals is None else res.totals.row(i),
        )
        for i in range(len(ks))
    ]


class BatchScorer:
    """Score many queries with one scan, in this process."""

    def __init__(
        self,
        engine: QueryEngine,
        block_rows: int = 0,
        on_scan: Callable[[int, int, float], None] | None = None,
    ):
        self.engine, self.block_rows = engine, block_rows
        self.on_scan = on_scan  # callback(n_queries, n_bytes, seconds) for metrics
        self.available = True
        self.down_since: float | None = None  # never down: it runs in the server's process
        self.placement = (str(engine.device), engine.resident)

    @classmethod
    def open(
        cls,
        index: Index,
        model: str | None,
        device: str,
        resident: Resident,
        block_rows: int = 0,
        on_scan: Callable[[int, int, float], None] | None = None,
    ) -> BatchScorer:
        """Load the index's model and open its factor store (the engine owns ``index``)."""
        engine = QueryEngine.open(index, model=model, device=device, resident=resident)
        return cls(engine, block_rows, on_scan)

    def score(self, queries: list[Example], options: Sequence[QueryOptions]) -> list[Scored]:
        """Each query's own top-k (the same answer it would get scanned alone): one scan per
        scan path (and totals' key) for the queries without normalisation (each at its own
        damping), one per damping for unit-normalised ones (the rows' scale depends on it)."""
        groups: dict[tuple[str, float | None, int, int, str | None], list[int]] = {}
        for i, o in enumerate(options):
            alpha = None if o.normalize == "none" else o.damping
            key = (o.normalize, alpha, o.query_rank, o.candidates, o.totals_by)
            groups.setdefault(key, []).append(i)
        out: list[Scored | None] = [None] * len(queries)
        for (normalize, _, query_rank, candidates, totals_by), idx in groups.items():
            part = [queries[i] for i in idx]
            t0 = time.perf_counter()
            if normalize == "none":
                p = self.engine.preconditioned_each(part, [options[i].damping for i in idx])
                scale = None
            else:
                p, scale = self.engine.prepared_for(part, options[idx[0]])
            t1 = time.perf_counter()
            group_ks = [options[i].k for i in idx]
            res = self.engine.scan(
                p,
                group_ks,
                block_rows=self.block_rows,
                query_rank=query_rank,
                candidates=candidates,
                row_scale=scale,
                totals_by=totals_by,
            )
            times = (t0, t1, time.perf_counter())
            for i, scored in zip(
                idx, answers(self.engine, res, group_ks, times, self.on_scan), strict=True
            ):
                out[i] = scored
        return [s for s in out if s is not None]

    def explain(self, query: Example, example_id: int, damping: float | None = None) -> Explanation:
        return self.engine.explain(query, example_id, damping)

    def close(self) -> None:
        self.engine.close()
