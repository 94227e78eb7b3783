"""GET /v1/index and POST /v1/admin/reload (service/serving/index.py does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ..protocol import IndexSummary, ReloadResponse
from ..serving import Serving, serving

router = APIRouter()


@router.api_route("/v1/index", methods=["GET", "HEAD"], response_model=IndexSummary)
async def index_summary(s: Annotated[Serving, Depends(serving)]) -> IndexSummary:
    """What the served version of the index holds and how this server scores it."""
    return s.index.summary()


@router.post("/v1/admin/reload", response_model=ReloadResponse, responses={409: {}})
async def reload(s: Annotated[Serving, Depends(serving)]) -> ReloadResponse:
    """Open the published version of the index now (the server also looks every
    ``LORIF_WATCH_S`` seconds): switched, unchanged, or 409 when it fails verification (the
    version before keeps serving)."""
    return await s.index.reload()
