"""``lorif``: the app that holds every command, and ``main()`` with one error line per failure.

Errors the user can fix (LorifError, bad flags and arguments) print ``error: ...`` on one line
and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import typer

from .demo import data_app, demo
from .index import index_app
from .query import query
from .serve import serve_command

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="LoRIF: low-rank influence functions - build and query attribution "
    "indexes, and serve them.",
)


def _version(value: bool) -> None:
    if value:
        from indexer import __version__

        typer.echo(f"lorif {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """LoRIF: low-rank influence functions - build and query attribution indexes, and serve
    them."""


app.add_typer(index_app, name="index")
app.command("query")(query)
app.command("serve")(serve_command)
app.command("demo")(demo)
app.add_typer(data_app, name="data")


def _click_error() -> type[Exception]:
    """ClickException as typer raises it: typer >= 0.2x carries its own copy of click."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # an older typer on the real click
        from click.exceptions import ClickException  # type: ignore[assignment,unused-ignore]
    return ClickException


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tests swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _log_to_stderr() -> None:
    """The library's ``lorif`` logger (start-up facts, warnings) on stderr, once."""
    logger = logging.getLogger("lorif")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main() -> None:
    from indexer.errors import LorifError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    click_error = _click_error()
    _log_to_stderr()
    try:
        code = app(standalone_mode=False, prog_name="lorif")
        if isinstance(code, int) and code:  # typer.Exit(code) returns it without standalone mode
            sys.exit(code)
    except LorifError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted (a build resumes when rerun with the same settings)", err=True)
        sys.exit(130)
    except click_error as e:
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"error: {e.format_message()}{hint}", err=True)  # type: ignore[attr-defined]
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)


if __name__ == "__main__":
    main()
