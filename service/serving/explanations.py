"""POST /v1/explanations: one training example's score for a query, split over both texts'
tokens (computed on the worker thread that owns the model; admission-controlled)."""

from __future__ import annotations

import asyncio
import time

from fastapi.responses import Response

from indexer import ConfigError, DataError, Example, Explanation, TokenContribution

from ..errors import ApiError, admitted
from ..protocol import ExplanationRequest, ExplanationResponse, TokenScore
from ..runtime import Runtime
from ..version import Version
from .queries import QueryIntake


class ExplanationServing:
    def __init__(self, rt: Runtime, intake: QueryIntake):
        self.rt, self.intake = rt, intake

    async def create(self, req: ExplanationRequest) -> Response:
        """Split one training example's score for the query over both texts' tokens (one
        version of the index throughout)."""
        async with self.rt.versions.hold() as v:
            rt = self.rt
            example_id = self.intake.example_id(v, req.example_id)
            damping = self.intake.options(v, damping=req.damping).damping
            q, _ = await rt.offload(self.intake.query, v, req.prompt, req.completion)
            t0 = time.perf_counter()
            try:
                e = await self._explain(v, q, example_id, damping)
            except (ConfigError, DataError) as err:
                raise ApiError(422, "Cannot explain this pair", str(err)) from None
            return await rt.offload(self._render, v, e, (time.perf_counter() - t0) * 1000)

    async def _explain(
        self, v: Version, query: Example, example_id: int, damping: float | None
    ) -> Explanation:
        """One pair's explanation on the worker thread; 429 when ``explain_queue`` are already
        admitted, 504 past the deadline (dropped if the worker had not started it)."""
        timeout = self.rt.settings.request_timeout_s
        with admitted("the explanation was not computed", timeout):
            return await asyncio.wait_for(
                v.batcher.run_exclusive(
                    time.monotonic() + timeout, v.scorer.explain, query, example_id, damping
                ),
                timeout,
            )

    def _render(self, v: Version, e: Explanation, compute_ms: float) -> Response:
        """The response's JSON (off the event loop: up to twice max_tokens token entries)."""
        body = ExplanationResponse(
            index_fingerprint=v.fingerprint,
            example_id=e.example_id,
            score=e.score,
            index_score=e.index_score,
            query_tokens=_tokens(e.query_tokens),
            example_tokens=_tokens(e.example_tokens),
            example_truncated=e.example_truncated,
            meta=v.examples.get_many([e.example_id])[0].meta,
            compute_ms=compute_ms,
        )
        return Response(body.model_dump_json(), media_type="application/json")


def _tokens(tokens: list[TokenContribution]) -> list[TokenScore]:
    return [TokenScore(text=t.text, contribution=t.contribution, target=t.target) for t in tokens]
