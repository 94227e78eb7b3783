"""The browse page at / and its static files (plain HTML/CSS/JS, no external resources)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The browse page."""
    return FileResponse(STATIC / "index.html")
