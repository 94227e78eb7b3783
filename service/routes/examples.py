"""GET /v1/examples/{id} (service/serving/examples.py does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from ..protocol import ExampleResponse
from ..serving import Serving, serving

router = APIRouter()
ExampleId = Annotated[str, Path(pattern=r"^[0-9]{1,18}$", description="A row number, digits only")]


@router.get("/v1/examples/{example_id}", response_model=ExampleResponse)
async def example(
    example_id: ExampleId, s: Annotated[Serving, Depends(serving)]
) -> ExampleResponse:
    """One training example in full."""
    return await s.examples.get(int(example_id))
