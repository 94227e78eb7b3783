"""Liveness, readiness (degraded when the shared cache is down or a published version was
refused) and Prometheus metrics. GET and HEAD, as probes send either."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import errors
from ..runtime import Runtime, runtime

router = APIRouter()
PROBE = ["GET", "HEAD"]


@router.api_route("/health/live", methods=PROBE, response_model=None)
async def live(rt: Annotated[Runtime, Depends(runtime)]) -> dict[str, Any] | JSONResponse:
    """Fails (503) when the scorer could not come back within ``scorer_grace_s``: only a
    restart of the server helps then."""
    if rt.ready and rt.scorer_lost:
        detail = f"the scorer has been down for over {rt.settings.scorer_grace_s:g} s"
        return errors.problem(503, "Not live", detail, "/health/live")
    return {"status": "live"}


@router.api_route("/health/ready", methods=PROBE)
async def ready(rt: Annotated[Runtime, Depends(runtime)]) -> JSONResponse:
    if not rt.ready:
        return errors.problem(503, "Not ready", "the index is loading", "/health/ready")
    if not rt.scoring:
        return errors.problem(503, "Not ready", "the scorer process is restarting", "/health/ready")
    healthy = rt.cache.healthy or await rt.cache.probe()
    refused = rt.versions.refused
    return JSONResponse(
        {
            "status": "ready" if healthy and refused is None else "degraded",
            "cache": "ok" if healthy else "unavailable",
            "index": rt.current.fingerprint,
            "version": rt.current.summary(),
            "refused_version": refused,
        }
    )


@router.api_route("/metrics", methods=PROBE)
async def metrics(rt: Annotated[Runtime, Depends(runtime)]) -> Response:
    if rt.ready:
        scorer = rt.current.scorer
        rt.metrics.queue_depth.set(rt.current.batcher.depth)
        rt.metrics.scorer_up.set(1 if rt.scoring else 0)
        rt.metrics.scorer_restarts.set(getattr(scorer, "restarts", 0))
        rt.metrics.scorer_spare.set(1 if rt.spare_ready else 0)
        rt.metrics.index_version.set(rt.current.number)
        rt.metrics.index_rows.set(len(rt.current.index))
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
