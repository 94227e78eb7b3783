"""``lorif serve INDEX``: every ServiceSettings field is one flag and one ``LORIF_*``
environment variable; a flag overrides the variable. Everything that can be checked before the
model loads is (settings, the port, the index file and its checksums, the model's location),
each failure one line."""

from __future__ import annotations

import inspect
import socket
from typing import Any

import typer
from pydantic import ValidationError

from indexer.errors import ConfigError
from service.settings import ServiceSettings

from .flags import command, given, settings_flags

SERVE_FLAGS = settings_flags(ServiceSettings, "LORIF_", skip=("index",))


def settings_from(index: str, values: dict[str, Any]) -> ServiceSettings:
    try:
        return ServiceSettings(index=index, **given(SERVE_FLAGS, values))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "settings"
        raise ConfigError(f"{where}: {first['msg']}") from None


def _serve(index: str, **values: Any) -> None:
    """Serve attribution queries over HTTP (also the API docs at /docs and the web page)."""
    settings = settings_from(index, values)
    if values.get("api_key"):
        typer.echo(
            "warning: --api-key is visible in the process list; prefer LORIF_API_KEY or "
            "--api-key-file",
            err=True,
        )
    serve(settings)


def serve(
    settings: ServiceSettings, log_level: str = "info", sock: socket.socket | None = None
) -> None:
    """Check what can be checked cheaply, then run the server (blocks). ``sock``: the
    listening socket if the caller bound it already."""
    from indexer import Index, QueryEngine, available_cpus
    from indexer.models.loading import locate_model
    from service import server
    from service.app import create_app

    sock = sock or server.bind(settings.host, settings.port)
    try:
        opened = Index(settings.index)
        try:
            report = opened.verify(settings.verify, threads=available_cpus())
            locate_model(QueryEngine.model_spec(opened, settings.model))
        except BaseException:
            opened.close()
            raise
    except BaseException:
        sock.close()
        raise
    server.run(create_app(settings, index=opened, verified=report), settings, sock, log_level)


INDEX_ARGUMENT = inspect.Parameter(
    "index",
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    annotation=str,
    default=typer.Argument(..., help="Index file to serve."),
)
serve_command = command(_serve, SERVE_FLAGS, leading=[INDEX_ARGUMENT])
