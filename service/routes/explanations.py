"""POST /v1/explanations: one training example's score for a query, split over both texts'
tokens (computed on the worker thread that owns the model; admission-controlled)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from indexer import ConfigError, DataError, Explanation, TokenContribution

from ..errors import ApiError
from ..protocol import ExplanationRequest, ExplanationResponse, TokenScore
from ..runtime import Runtime, runtime

router = APIRouter()


def _tokens(tokens: list[TokenContribution]) -> list[TokenScore]:
    return [TokenScore(text=t.text, contribution=t.contribution, target=t.target) for t in tokens]


@router.post("/v1/explanations", response_model=ExplanationResponse)
async def explanations(
    req: ExplanationRequest, rt: Annotated[Runtime, Depends(runtime)]
) -> Response:
    """Split one training example's score for the query over both texts' tokens."""
    rt.check_example_id(req.example_id)
    damping = rt.options(damping=req.damping).damping
    q, _ = await rt.offload(rt.checked_query, req.prompt, req.completion)
    t0 = time.perf_counter()
    try:
        e = await rt.explain(q, req.example_id, damping)
    except (ConfigError, DataError) as err:
        raise ApiError(422, "Cannot explain this pair", str(err)) from None
    return await rt.offload(_render, rt, e, (time.perf_counter() - t0) * 1000)


def _render(rt: Runtime, e: Explanation, compute_ms: float) -> Response:
    """The response's JSON (off the event loop: up to twice max_tokens token entries)."""
    body = ExplanationResponse(
        index_fingerprint=rt.index.fingerprint,
        example_id=e.example_id,
        score=e.score,
        index_score=e.index_score,
        query_tokens=_tokens(e.query_tokens),
        example_tokens=_tokens(e.example_tokens),
        example_truncated=e.example_truncated,
        meta=rt.examples.get_many([e.example_id])[0].meta,
        compute_ms=compute_ms,
    )
    return Response(body.model_dump_json(), media_type="application/json")
