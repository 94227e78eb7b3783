"""Batched scoring: featurize and precondition a batch of distinct queries, then one scan of the
factor store through the indexer's query engine serves the whole batch. ``Scoring`` is what the
batcher's worker thread calls: a ``BatchScorer`` in this process (``scorer = "thread"``) or the
same scorer in a process of its own (``scorer_process.ScorerProcess``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from indexer import (
    CurvatureRecord,
    Example,
    Explanation,
    Index,
    QueryEngine,
    Resident,
    ScoreResult,
    relative_damping,
)

Damping = float | None  # relative damping alpha of one query (None: the index build's)


@dataclass(frozen=True)
class QueryScoring:
    """How one query is scored: its relative damping (None: the build's) and normalisation."""

    damping: Damping = None
    normalize: str = "none"  # none | unit (cosines under H^-1)


PLAIN = QueryScoring()  # the build's damping, no normalisation


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

    @property
    def finite(self) -> bool:
        return bool(
            np.isfinite(self.proponent_scores).all() and np.isfinite(self.opponent_scores).all()
        )


@dataclass(frozen=True)
class ScoringOptions:
    """How the scan scores (part of every cache key): exact, or rank-``query_rank`` queries
    with ``candidates`` x k rows per direction re-scored exactly."""

    query_rank: int = 0
    candidates: int = 4

    @property
    def path(self) -> str:
        return "low-rank" if self.query_rank else "exact"


def query_damping(curvature: CurvatureRecord, requested: Damping, default: Damping) -> Damping:
    """The relative damping a query is scored with: ``requested``, else the server's
    ``default``; None for the build's own (so both share one cache entry). ConfigError when
    the index was built with an absolute lambda (``curvature``: its manifest's section)."""
    return relative_damping(curvature, requested if requested is not None else default)


class Scoring(Protocol):
    """The worker's calls (one at a time, from the batcher's worker thread)."""

    def score(
        self, queries: list[Example], ks: Sequence[int], scorings: Sequence[QueryScoring] = ()
    ) -> list[Scored]:
        """Each query's own top-``ks[i]`` scored as ``scorings[i]`` says (absent: the
        build's damping, no normalisation), the same answer it would get scanned alone."""

    def explain(self, query: Example, example_id: int, damping: Damping = None) -> Explanation:
        """One (query, example) score split over both texts' tokens."""

    def close(self) -> None:
        """Release the model, the device and the index."""

    @property
    def available(self) -> bool:
        """Calls can be made now."""

    @property
    def placement(self) -> tuple[str, bool]:
        """(torch device, factor rows resident in its memory)."""


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
        store = engine.store
        on_scan(len(ks), store.row_bytes * len(store), t2 - t1)
    return [
        Scored(
            res.proponent_ids[i, : ks[i]],
            res.proponent_scores[i, : ks[i]],
            res.opponent_ids[i, : ks[i]],
            res.opponent_scores[i, : ks[i]],
            t1 - t0,
            t2 - t1,
            residual=None if res.residual is None else float(res.residual[i]),
        )
        for i in range(len(ks))
    ]


class BatchScorer:
    """Score many queries with one scan, in this process."""

    def __init__(
        self,
        engine: QueryEngine,
        block_rows: int = 0,
        options: ScoringOptions = ScoringOptions(),
        on_scan: Callable[[int, int, float], None] | None = None,
    ):
        self.engine, self.options = engine, options
        self.block_rows = block_rows
        self.on_scan = on_scan  # callback(n_queries, n_bytes, seconds) for metrics
        self.available = True
        self.placement = (str(engine.device), engine.resident)

    @classmethod
    def open(
        cls,
        index: Index,
        model: str | None,
        device: str,
        resident: Resident,
        block_rows: int = 0,
        options: ScoringOptions = ScoringOptions(),
        on_scan: Callable[[int, int, float], None] | None = None,
    ) -> BatchScorer:
        """Load the index's model and open its factor store (the engine owns ``index``)."""
        engine = QueryEngine.open(index, model=model, device=device, resident=resident)
        return cls(engine, block_rows, options, on_scan)

    def score(
        self, queries: list[Example], ks: Sequence[int], scorings: Sequence[QueryScoring] = ()
    ) -> list[Scored]:
        """Each query's own top-``ks[i]`` (the same answer it would get scanned alone): one
        scan for the queries without normalisation (each at its own damping), one per damping
        for unit-normalised ones (the rows' scale depends on it)."""
        scorings = list(scorings) or [PLAIN] * len(queries)
        groups: dict[tuple[str, Damping], list[int]] = {}
        for i, s in enumerate(scorings):
            key = ("none", None) if s.normalize == "none" else ("unit", s.damping)
            groups.setdefault(key, []).append(i)
        out: list[Scored | None] = [None] * len(queries)
        for (normalize, damping), idx in groups.items():
            part = [queries[i] for i in idx]
            t0 = time.perf_counter()
            if normalize == "none":
                p = self.engine.preconditioned_each(part, [scorings[i].damping for i in idx])
                scale = None
            else:
                p, scale = self.engine.prepared(part, damping, "unit")
            t1 = time.perf_counter()
            group_ks = [ks[i] for i in idx]
            res = self.engine.scan(
                p,
                group_ks,
                block_rows=self.block_rows,
                query_rank=self.options.query_rank,
                candidates=self.options.candidates,
                row_scale=scale,
            )
            times = (t0, t1, time.perf_counter())
            for i, scored in zip(
                idx, answers(self.engine, res, group_ks, times, self.on_scan), strict=True
            ):
                out[i] = scored
        return [s for s in out if s is not None]

    def explain(self, query: Example, example_id: int, damping: Damping = None) -> Explanation:
        return self.engine.explain(query, example_id, damping)

    def close(self) -> None:
        self.engine.close()
