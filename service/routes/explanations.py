"""POST /v1/explanations (service/serving/explanations.py does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from ..protocol import ExplanationRequest, ExplanationResponse
from ..serving import Serving, serving

router = APIRouter()


@router.post("/v1/explanations", response_model=ExplanationResponse)
async def explanations(
    req: ExplanationRequest, s: Annotated[Serving, Depends(serving)]
) -> Response:
    """Split one training example's score for the query over both texts' tokens."""
    return await s.explanations.create(req)
