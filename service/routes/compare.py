"""POST /v1/compare (service/serving/compare.py does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ..protocol_views import CompareRequest, CompareResponse
from ..serving import Serving, serving

router = APIRouter()


@router.post("/v1/compare", response_model=CompareResponse, response_model_exclude_none=True)
async def compare(req: CompareRequest, s: Annotated[Serving, Depends(serving)]) -> CompareResponse:
    """Two queries side by side: their shared and distinct top-k training examples, each with
    its rank and score for both queries."""
    return await s.compare.create(req)
