"""GET /v1/examples/{id}: one training example in full."""

from __future__ import annotations

from ..protocol import ExampleResponse
from ..runtime import Runtime
from .queries import QueryIntake


class ExampleServing:
    def __init__(self, rt: Runtime, intake: QueryIntake):
        self.rt, self.intake = rt, intake

    async def get(self, example_id: int) -> ExampleResponse:
        rt, row = self.rt, self.intake.example_id(example_id)
        ex = (await rt.offload(rt.examples.get_many, [row]))[0]
        n_tokens = await rt.offload(rt.index.n_tokens, row)
        return ExampleResponse(
            example_id=row,
            prompt=ex.prompt,
            completion=ex.completion,
            text=ex.text,
            meta=ex.meta,
            n_tokens=n_tokens,
        )
