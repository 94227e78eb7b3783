"""GET /v1/index: what the served index holds (the same summary as `lorif index info`) and how
this server scores it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ..protocol import IndexSummary
from ..runtime import Runtime, runtime

router = APIRouter()


@router.get("/v1/index", response_model=IndexSummary)
async def index_summary(rt: Annotated[Runtime, Depends(runtime)]) -> IndexSummary:
    device, resident = rt.scorer.placement
    return IndexSummary(
        **rt.index.summary(),
        scoring_path=rt.defaults.path,
        damping=rt.defaults.reported_damping(rt.index.curvature_record),
        query_rank=rt.defaults.query_rank,
        scorer="cluster" if rt.on_cluster else rt.settings.scorer,
        device=device,
        resident=resident,
    )
