"""GET /v1/examples/{id}: one training example in full."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ..protocol import ExampleResponse
from ..runtime import Runtime, runtime

router = APIRouter()


@router.get("/v1/examples/{example_id}", response_model=ExampleResponse)
async def example(example_id: int, rt: Annotated[Runtime, Depends(runtime)]) -> ExampleResponse:
    rt.check_example_id(example_id)
    ex = rt.examples.get_many([example_id])[0]
    return ExampleResponse(
        example_id=example_id,
        prompt=ex.prompt,
        completion=ex.completion,
        text=ex.text,
        meta=ex.meta,
        n_tokens=rt.engine.index.n_tokens(example_id),
    )
