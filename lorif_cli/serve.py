"""``lorif serve INDEX``: every ServiceSettings field is one flag and one ``LORIF_*``
environment variable; a flag overrides the variable."""

from __future__ import annotations

import inspect
from typing import Any

import typer

from service.settings import ServiceSettings

from .flags import command, given, settings_flags

SERVE_FLAGS = settings_flags(ServiceSettings, "LORIF_", skip=("index",))


def _serve(index: str, **values: Any) -> None:
    """Serve attribution queries over HTTP (also the API docs at /docs and the web page)."""
    import uvicorn

    from service.app import create_app

    settings = ServiceSettings(index=index, **given(SERVE_FLAGS, values))
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, workers=1, log_level="info"
    )


INDEX_ARGUMENT = inspect.Parameter(
    "index",
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    annotation=str,
    default=typer.Argument(..., help="Index file to serve."),
)
serve = command(_serve, SERVE_FLAGS, leading=[INDEX_ARGUMENT])
