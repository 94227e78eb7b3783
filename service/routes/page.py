"""The browse page at /, the API docs at /docs (Swagger UI 5 from the swagger-ui-bundle-v2 package,
served locally), and their static files (no external resources)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> FileResponse:
    """The browse page."""
    return FileResponse(STATIC / "index.html")


@router.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
async def favicon() -> FileResponse:
    """The page's icon (an SVG; browsers ask for /favicon.ico by default)."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
async def docs() -> FileResponse:
    """Swagger UI for /openapi.json."""
    return FileResponse(STATIC / "docs.html")
