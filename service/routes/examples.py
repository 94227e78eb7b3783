"""GET /v1/examples/{id} and its context (service/serving/examples.py does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from ..protocol import ExampleResponse
from ..protocol_views import ContextResponse
from ..serving import Serving, serving

router = APIRouter()
ExampleId = Annotated[str, Path(pattern=r"^[0-9]{1,18}$", description="A row number, digits only")]


@router.get("/v1/examples/{example_id}", response_model=ExampleResponse)
async def example(
    example_id: ExampleId, s: Annotated[Serving, Depends(serving)]
) -> ExampleResponse:
    """One training example in full."""
    return await s.examples.get(int(example_id))


@router.get("/v1/examples/{example_id}/context", response_model=ContextResponse)
async def context(
    example_id: ExampleId,
    s: Annotated[Serving, Depends(serving)],
    n: Annotated[int, Query(ge=0, le=20, description="examples on each side")] = 2,
) -> ContextResponse:
    """The examples around one in its source: by the metadata's `position` or `speech_id`
    within the same source/document/play/act/scene, else by neighbouring ids."""
    return await s.examples.context(int(example_id), n)
