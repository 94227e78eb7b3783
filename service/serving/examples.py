"""GET /v1/examples/{id}: one training example in full; GET /v1/examples/{id}/context: the
examples around it in its source (indexer.storage.metadata: by the metadata's order key within
its play/act/scene or source, else by id)."""

from __future__ import annotations

from ..protocol import ExampleResponse
from ..protocol_views import ContextResponse
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

    async def context(self, example_id: int, n: int) -> ContextResponse:
        async with self.rt.versions.hold() as v:
            row = self.intake.example_id(v, example_id)
            table = await self.rt.offload(lambda: v.index.meta_table)
            ids = table.context(row, n)
            examples = await self.rt.offload(v.examples.get_many, ids)
        return ContextResponse(
            example_id=row,
            by="example id" if table.order_of(row) is None else "order key",
            examples=[
                {"example_id": i, "text": ex.text, "meta": ex.meta}
                for i, ex in zip(ids, examples, strict=True)
            ],
        )
