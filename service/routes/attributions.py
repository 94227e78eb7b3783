"""POST /v1/attributions: the top-k proponents and/or opponents of a query (cached, batched)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends

from indexer import Example

from ..batcher import Overloaded
from ..cache import query_key
from ..errors import ApiError
from ..protocol import Approximation, AttributionRequest, AttributionResponse, Timings
from ..runtime import Runtime, runtime
from ..scorer import Scored

router = APIRouter()


@router.post(
    "/v1/attributions", response_model=AttributionResponse, response_model_exclude_none=True
)
async def attributions(
    req: AttributionRequest, rt: Annotated[Runtime, Depends(runtime)]
) -> AttributionResponse:
    t0 = time.perf_counter()
    q, n_tokens = rt.checked_query(req.prompt, req.completion)
    key = query_key(rt.engine.index.fingerprint, rt.options, q, req.k)
    scored = await rt.cache.get(key)
    rt.metrics.cache.labels("hit" if scored else "miss").inc()
    cached = scored is not None
    if scored is None:
        scored = await _score(rt, key, q, req.k)
        await rt.cache.put(key, scored)
    both = req.direction == "both"
    proponents = (
        rt.results(scored.proponent_ids, scored.proponent_scores, req.k)
        if both or req.direction == "proponents"
        else None
    )
    opponents = (
        rt.results(scored.opponent_ids, scored.opponent_scores, req.k)
        if both or req.direction == "opponents"
        else None
    )
    timings = Timings(
        queue_ms=0.0 if cached else scored.queue_s * 1000,
        featurize_ms=0.0 if cached else scored.featurize_s * 1000,
        scan_ms=0.0 if cached else scored.scan_s * 1000,
        total_ms=(time.perf_counter() - t0) * 1000,
    )
    return AttributionResponse(
        index_fingerprint=rt.engine.index.fingerprint,
        query_tokens=n_tokens,
        scoring=Approximation(
            path=rt.options.path, query_rank=rt.options.query_rank, residual=scored.residual
        ),
        proponents=proponents,
        opponents=opponents,
        cached=cached,
        timings=timings,
    )


async def _score(rt: Runtime, key: str, q: Example, k: int) -> Scored:
    """Queue the query for the next scan; 429 when the queue is full, 504 past the deadline."""
    rt.metrics.queue_depth.set(rt.batcher.depth)
    timeout = rt.settings.request_timeout_s
    try:
        return await asyncio.wait_for(rt.batcher.submit(key, q, k), timeout)
    except Overloaded as e:
        raise ApiError(
            429, "Too many requests", str(e), headers={"Retry-After": str(e.retry_after)}
        ) from None
    except TimeoutError:
        raise ApiError(
            504, "Deadline exceeded", f"the query was not scored within {timeout} s"
        ) from None
