"""GET /v1/examples/{id}: one training example in full."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from ..protocol import ExampleResponse
from ..runtime import Runtime, runtime

router = APIRouter()
ExampleId = Annotated[str, Path(pattern=r"^[0-9]{1,18}$", description="A row number, digits only")]


@router.get("/v1/examples/{example_id}", response_model=ExampleResponse)
async def example(
    example_id: ExampleId, rt: Annotated[Runtime, Depends(runtime)]
) -> ExampleResponse:
    row = int(example_id)
    rt.check_example_id(row)
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
