"""The ``lorif`` command: the indexer's commands plus ``lorif serve`` (service imports indexer,
never the reverse)."""

from __future__ import annotations

import typer

from indexer.cli import app, main as indexer_main


@app.command("serve")
def serve(index: str = typer.Argument(..., help="Index file to serve."),
          host: str = typer.Option(None, help="Bind address [env LORIF_HOST]."),
          port: int = typer.Option(None, help="Bind port [env LORIF_PORT]."),
          device: str = typer.Option(None, help="auto | cpu | cuda[:N] [env LORIF_DEVICE]."),
          model: str = typer.Option(None, help="Model path if it moved [env LORIF_MODEL]."),
          redis_url: str = typer.Option(None, help="Shared cache [env LORIF_REDIS_URL].")
          ) -> None:
    """Serve attribution queries over HTTP (settings also from LORIF_* environment variables)."""
    import uvicorn

    from .app import create_app
    from .settings import ServiceSettings

    overrides = {k: v for k, v in {"index": index, "host": host, "port": port, "device": device,
                                   "model": model, "redis_url": redis_url}.items()
                 if v is not None}
    settings = ServiceSettings(**overrides)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, workers=1)


def main() -> None:
    indexer_main()
