"""POST /v1/attributions: the top-k proponents and/or opponents of a query (cached, batched).

A cached answer costs no tokenization and, when its examples are in the example cache, no
thread hop; everything else that takes CPU (tokenizing, HDF5 reads, rendering fresh or large
answers) runs in a thread, so the event loop keeps answering while the scorer is busy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from fastapi.responses import Response

from indexer import (
    DataError,
    Example,
    QueryOptions,
    histogram_dict,
    provenance,
    query_example,
    result_row,
    scoring_dict,
    totals_dict,
)

from ..batcher import NonFiniteScores
from ..cache_codec import query_key
from ..errors import ApiError, admitted
from ..protocol import (
    Approximation,
    AttributionRequest,
    AttributionResponse,
    Result,
    Timings,
    VerbatimResult,
)
from ..protocol_views import Provenance, ScoreHistogram, TotalsSummary
from ..runtime import Runtime
from ..scorer import Scored
from ..version import Version
from .queries import QueryIntake

INLINE_RESULTS = 100  # up to this many cached rows are rendered on the event loop
log = logging.getLogger("lorif")


class AttributionServing:
    def __init__(self, rt: Runtime, intake: QueryIntake):
        self.rt, self.intake = rt, intake

    async def create(self, req: AttributionRequest) -> Response:
        """The answer, every part of it from the version of the index current at arrival."""
        async with self.rt.versions.hold() as v:
            return await self._create(req, v)

    async def _create(self, req: AttributionRequest, v: Version) -> Response:
        rt, t0 = self.rt, time.perf_counter()
        options = self.intake.options(v, **req.options())
        if options.totals_by is not None:
            await rt.offload(self.intake.totals_key, v, options.totals_by)
        scored, cached = await self.scored(v, req.prompt, req.completion, options)
        ids = [
            *(scored.proponent_ids[: req.k] if req.direction != "opponents" else []),
            *(scored.opponent_ids[: req.k] if req.direction != "proponents" else []),
        ]
        # Only cached answers are rendered here: a finished batch wakes up to max_batch
        # requests at once, and rendering them all on the event loop stalled it for tens of ms.
        lookup = v.verbatim if req.verbatim else None
        text = req.prompt + (req.completion or "")
        if (
            cached
            and not req.full_text
            and 2 * req.k <= INLINE_RESULTS
            and not v.examples.missing(int(i) for i in ids)
            and (lookup is None or lookup.known(text, [int(i) for i in ids]))
        ):
            return self._render(v, req, options, scored, cached, t0)
        return await rt.offload(self._render, v, req, options, scored, cached, t0)

    async def scored(
        self, v: Version, prompt: str, completion: str | None, options: QueryOptions
    ) -> tuple[Scored, bool]:
        """(the query's top-k and summaries under canonical ``options``, from the cache or
        one scan; whether it was cached)."""
        rt = self.rt
        try:
            key = query_key(v.content_id, query_example(prompt, completion), options)
        except DataError as e:
            raise ApiError(422, "Empty query", str(e)) from None
        scored = await rt.cache.get(key)
        rt.metrics.cache.labels("hit" if scored else "miss").inc()
        if scored is not None:
            return scored, True
        q, n_tokens = await rt.offload(self.intake.query, v, prompt, completion)
        return await self._score(v, key, q, options, n_tokens), False

    async def _score(
        self, v: Version, key: str, query: Example, options: QueryOptions, n_tokens: int
    ) -> Scored:
        """Queue the query for the next scan; 429 when the queue is full, 504 past the
        deadline (the scan still finishes and its result is cached), 500 for non-finite
        scores."""
        rt, timeout = self.rt, self.rt.settings.request_timeout_s
        rt.metrics.queue_depth.set(v.batcher.depth)
        with admitted("the query was not scored", timeout):
            deadline = time.monotonic() + timeout
            future = v.batcher.submit(key, query, options, n_tokens, deadline)
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except NonFiniteScores as e:
                log.error("non-finite scores for %s: the index or the model is damaged", key)
                raise ApiError(500, "Corrupted scores", f"{e}; the answer was not cached") from None

    def _render(
        self,
        v: Version,
        req: AttributionRequest,
        options: QueryOptions,
        scored: Scored,
        cached: bool,
        t0: float,
    ) -> Response:
        both = req.direction == "both"
        proponents = (
            self._results(v, scored.proponent_ids, scored.proponent_scores, req)
            if both or req.direction == "proponents"
            else None
        )
        opponents = (
            self._results(v, scored.opponent_ids, scored.opponent_scores, req)
            if both or req.direction == "opponents"
            else None
        )
        timings = Timings(
            queue_ms=0.0 if cached else scored.queue_s * 1000,
            featurize_ms=0.0 if cached else scored.featurize_s * 1000,
            scan_ms=0.0 if cached else scored.scan_s * 1000,
            total_ms=(time.perf_counter() - t0) * 1000,
        )
        verbatim: list[VerbatimResult] | None = None
        if req.verbatim and v.verbatim is not None:
            shown = [r.example_id for r in (proponents or []) + (opponents or [])]
            verbatim, marks = v.verbatim.find(req.prompt + (req.completion or ""), shown)
            for r in (proponents or []) + (opponents or []):
                r.verbatim_words = marks.get(r.example_id)
        damping = options.reported_damping(v.index.curvature_record)
        query = query_example(req.prompt, req.completion)
        body = AttributionResponse(
            index_fingerprint=v.fingerprint,
            query_tokens=scored.n_tokens,
            scoring=Approximation(**scoring_dict(options, damping, scored.residual)),
            proponents=proponents,
            opponents=opponents,
            verbatim=verbatim,
            score_histogram=None
            if scored.histogram is None
            else ScoreHistogram(**histogram_dict(scored.histogram)),
            totals=None if scored.totals is None else TotalsSummary(**totals_dict(scored.totals)),
            provenance=Provenance(**provenance(v.index_summary, query, options, damping, v.number)),
            cached=cached,
            timings=timings,
        )
        return Response(body.model_dump_json(exclude_none=True), media_type="application/json")

    def _results(
        self,
        v: Version,
        ids: Sequence[int] | npt.NDArray[np.int64],
        scores: Sequence[float] | npt.NDArray[np.float32],
        req: AttributionRequest,
    ) -> list[Result]:
        """The first ``req.k`` (id, score) pairs as API results (reads the examples not in the
        example cache: off the event loop when there are any)."""
        chosen = [int(i) for i in ids[: req.k]]
        examples = v.examples.get_many(chosen)
        chars = self.rt.settings.snippet_chars
        return [
            Result(**result_row(rank, i, float(s), ex, chars, req.full_text))
            for rank, (i, s, ex) in enumerate(zip(chosen, scores, examples, strict=False), 1)
        ]
