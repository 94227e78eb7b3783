"""POST /v1/attributions (service/serving/attributions.py does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from ..protocol import AttributionRequest, AttributionResponse
from ..serving import Serving, serving

router = APIRouter()


@router.post(
    "/v1/attributions", response_model=AttributionResponse, response_model_exclude_none=True
)
async def attributions(
    req: AttributionRequest, s: Annotated[Serving, Depends(serving)]
) -> Response:
    """The query's top-k proponents and/or opponents among the training examples."""
    return await s.attributions.create(req)
