"""POST /v1/attributions: the top-k proponents and/or opponents of a query (cached, batched).

A cached answer costs no tokenization and, when its examples are in the example cache, no
thread hop; everything else that takes CPU (tokenizing, HDF5 reads, rendering fresh or large
answers) runs in a thread, so the event loop keeps answering while the scorer is busy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from indexer import DataError, QueryOptions, query_example, snippet

from ..errors import ApiError
from ..protocol import (
    Approximation,
    AttributionRequest,
    AttributionResponse,
    Result,
    Timings,
    VerbatimResult,
)
from ..runtime import Runtime, runtime
from ..scorer import Scored

router = APIRouter()
INLINE_RESULTS = 100  # up to this many cached rows are rendered on the event loop


@router.post(
    "/v1/attributions", response_model=AttributionResponse, response_model_exclude_none=True
)
async def attributions(
    req: AttributionRequest, rt: Annotated[Runtime, Depends(runtime)]
) -> Response:
    t0 = time.perf_counter()
    options = rt.options(**req.options())
    try:
        key = rt.key(query_example(req.prompt, req.completion), options)
    except DataError as e:
        raise ApiError(422, "Empty query", str(e)) from None
    scored = await rt.cache.get(key)
    rt.metrics.cache.labels("hit" if scored else "miss").inc()
    cached = scored is not None
    if scored is None:
        q, n_tokens = await rt.offload(rt.checked_query, req.prompt, req.completion)
        scored = await rt.score(key, q, options, n_tokens)
    ids = [
        *(scored.proponent_ids[: req.k] if req.direction != "opponents" else []),
        *(scored.opponent_ids[: req.k] if req.direction != "proponents" else []),
    ]
    # Only cached answers are rendered here: a finished batch wakes up to max_batch requests
    # at once, and rendering them all on the event loop stalled it for tens of ms.
    lookup = rt.verbatim if req.verbatim else None
    text = req.prompt + (req.completion or "")
    if (
        cached
        and 2 * req.k <= INLINE_RESULTS
        and not rt.examples.missing(int(i) for i in ids)
        and (lookup is None or lookup.known(text, [int(i) for i in ids]))
    ):
        return _render(rt, req, options, scored, cached, t0)
    return await rt.offload(_render, rt, req, options, scored, cached, t0)


def _render(
    rt: Runtime,
    req: AttributionRequest,
    options: QueryOptions,
    scored: Scored,
    cached: bool,
    t0: float,
) -> Response:
    both = req.direction == "both"
    proponents = (
        _results(rt, scored.proponent_ids, scored.proponent_scores, req.k)
        if both or req.direction == "proponents"
        else None
    )
    opponents = (
        _results(rt, scored.opponent_ids, scored.opponent_scores, req.k)
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
    if req.verbatim and rt.verbatim is not None:
        shown = [r.example_id for r in (proponents or []) + (opponents or [])]
        verbatim, marks = rt.verbatim.find(req.prompt + (req.completion or ""), shown)
        for r in (proponents or []) + (opponents or []):
            r.verbatim_words = marks.get(r.example_id)
    body = AttributionResponse(
        index_fingerprint=rt.index.fingerprint,
        query_tokens=scored.n_tokens,
        scoring=Approximation(
            path=options.path,
            query_rank=options.query_rank,
            residual=scored.residual,
            damping=options.reported_damping(rt.index.curvature_record),
            normalize=options.normalize,
        ),
        proponents=proponents,
        opponents=opponents,
        verbatim=verbatim,
        cached=cached,
        timings=timings,
    )
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


def _results(
    rt: Runtime,
    ids: Sequence[int] | npt.NDArray[np.int64],
    scores: Sequence[float] | npt.NDArray[np.float32],
    k: int,
) -> list[Result]:
    """The first ``k`` (id, score) pairs as API results with snippet and metadata (reads
    the examples not in the example cache: off the event loop when there are any)."""
    chosen = [int(i) for i in ids[:k]]
    examples = rt.examples.get_many(chosen)
    return [
        Result(
            rank=rank,
            example_id=i,
            score=float(s),
            snippet=snippet(ex.text, rt.settings.snippet_chars),
            meta=ex.meta,
        )
        for rank, (i, s, ex) in enumerate(zip(chosen, scores[:k], examples, strict=False), 1)
    ]
