"""GET /v1/index (service/serving/index.py does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ..protocol import IndexSummary
from ..serving import Serving, serving

router = APIRouter()


@router.get("/v1/index", response_model=IndexSummary)
async def index_summary(s: Annotated[Serving, Depends(serving)]) -> IndexSummary:
    """What the served index holds and how this server scores it."""
    return s.index.summary()
