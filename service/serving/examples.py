"""GET /v1/examples/{id}: one training example in full."""

from __future__ import annotations

from ..protocol import ExampleResponse
from ..runtime import Runtime
from .queries import QueryIntake


class ExampleServing:
    def __init__(self, rt: Runtime, intake: QueryIntake):
        self.rt, self.intake = rt, intake

    async def get(self, example_id: int) -> ExampleResponse:
        async with self.rt.versions.hold() as v:
            row = self.intake.example_id(v, example_id)
            ex = (await self.rt.offload(v.examples.get_many, [row]))[0]
            n_tokens = await self.rt.offload(v.index.n_tokens, row)
        return ExampleResponse(
            example_id=row,
            prompt=ex.prompt,
            completion=ex.completion,
            text=ex.text,
            meta=ex.meta,
            n_tokens=n_tokens,
        )
