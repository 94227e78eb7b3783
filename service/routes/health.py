"""Liveness, readiness (degraded when the shared cache is down) and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import errors
from ..runtime import Runtime, runtime

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, Any]:
    return {"status": "live"}


@router.get("/health/ready")
async def ready(rt: Annotated[Runtime, Depends(runtime)]) -> JSONResponse:
    if not rt.ready:
        return errors.problem(503, "Not ready", "the index is loading", "/health/ready")
    if not rt.scoring:
        return errors.problem(503, "Not ready", "the scorer process is restarting", "/health/ready")
    return JSONResponse(
        {
            "status": "ready" if rt.cache.healthy else "degraded",
            "cache": "ok" if rt.cache.healthy else "unavailable",
            "index": rt.index.fingerprint,
        }
    )


@router.get("/metrics")
async def metrics(rt: Annotated[Runtime, Depends(runtime)]) -> Response:
    if rt.ready:
        rt.metrics.queue_depth.set(rt.batcher.depth)
        rt.metrics.scorer_up.set(1 if rt.scoring else 0)
        rt.metrics.scorer_restarts.set(getattr(rt.scorer, "restarts", 0))
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
