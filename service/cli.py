"""The ``lorif`` command: the indexer's commands plus ``lorif serve`` (service imports indexer,
never the reverse). Every ServiceSettings field is one ``lorif serve`` flag and one ``LORIF_*``
environment variable; a flag overrides the variable."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import typer

from indexer.cli import app, main as indexer_main

from .settings import ServiceSettings

_SCALARS = {str: str, int: int, float: float, bool: bool}


def _flag_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    base = args[0]
    if typing.get_origin(base) is list:
        return list[str]
    return _SCALARS.get(base, str)


def _serve_command():
    params = [inspect.Parameter("index", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                                default=typer.Argument(..., help="Index file to serve."))]
    for name, field in ServiceSettings.model_fields.items():
        if name == "index":
            continue
        flag = "--" + name.replace("_", "-")
        kind = _flag_type(field.annotation)
        decl = (f"{flag}/--no-{flag[2:]}",) if kind is bool else (flag,)
        default = field.default if field.default_factory is None else field.default_factory()
        help_text = f"{field.description} (env LORIF_{name.upper()}, default {default!r})"
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=typing.Optional[kind],
            default=typer.Option(None, *decl, help=help_text, show_default=False)))

    def serve(**kwargs: Any) -> None:
        """Serve attribution queries over HTTP (also the API docs at /docs and the web page)."""
        import uvicorn

        from .app import create_app

        overrides = {k: v for k, v in kwargs.items() if v is not None and v != []}
        settings = ServiceSettings(**overrides)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, workers=1,
                    log_level="info")

    serve.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return serve


app.command("serve")(_serve_command())


@app.command("demo")
def demo(workdir: str = typer.Option(".lorif-demo", help="Where the corpus and index go."),
         k: int = typer.Option(5, "-k", help="Results to print per query."),
         quick: bool = typer.Option(False, "--quick", help="Every 15th speech (~2,000)."),
         serve: bool = typer.Option(True, "--serve/--no-serve",
                                    help="Then serve the API and the page."),
         host: str = typer.Option("127.0.0.1", help="Bind address when serving."),
         port: int = typer.Option(8000, help="Port when serving.")) -> None:
    """Index Shakespeare's speeches with the demo model (once), print attributions for three
    queries, then serve the API and the browse page (in-process cache)."""
    from indexer.demo import ensure_demo_index, run_demo

    run_demo(workdir, k, quick)
    if serve:
        import uvicorn

        from .app import create_app

        index = ensure_demo_index(workdir, quick)
        typer.echo(f"\nserving the page and the API at http://{host}:{port}/  "
                   f"(API docs at /docs; Ctrl+C stops)")
        uvicorn.run(create_app(ServiceSettings(index=str(index), host=host, port=port)),
                    host=host, port=port, workers=1, log_level="warning")


def main() -> None:
    indexer_main()
