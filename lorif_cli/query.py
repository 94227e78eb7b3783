"""``lorif query``: top-k proponents and opponents of a query (or of every query in a jsonl),
as text or JSON, and optionally every example's score as a (Q, N) .npy matrix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import typer

from indexer.errors import ConfigError
from indexer.query.options import QueryOptions

if TYPE_CHECKING:
    from indexer import Resident

CHUNK = 32  # queries per scan when scoring a file of queries


def query(
    index: str = typer.Argument(..., help="The index (a directory of shards, or one file)."),
    prompt: str = typer.Argument(
        None, help="Query text (all tokens count unless --completion is given); or give --queries."
    ),
    completion: str = typer.Option(None, help="Completion: then only its tokens count."),
    queries: str = typer.Option(
        None, help="A .jsonl of queries (`text`, or `prompt` + `completion`), instead of PROMPT."
    ),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Results per direction."),
    opponents: bool = typer.Option(True, help="Also list the lowest scores."),
    all_scores: bool = typer.Option(
        False,
        "--all-scores",
        help="Also write every example's score: a (queries, N) float32 matrix to --output.",
    ),
    output: str = typer.Option(None, help="The .npy file for --all-scores."),
    model: str = typer.Option(None, help="Model path if it moved since the build."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0 = the CPUs available)."),
    resident: str = typer.Option(
        "auto",
        help="Keep the factor rows in device memory: auto (on a GPU when they fit), on, off.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    damping: float = typer.Option(
        None,
        help="Relative damping alpha for these queries (lambda = alpha * the layer's mean top "
        "eigenvalue; default: the build's --damping). Exact: equals an index built with it.",
    ),
    normalize: str = typer.Option(
        "none",
        help="none | unit: cosines under H^-1 (the examples' norms: one extra pass).",
    ),
) -> None:
    """Top-k proponents (and opponents) of queries among the indexed examples."""
    from indexer.data import load_examples, query_example
    from indexer.query import QueryEngine
    from indexer.threads import use_threads

    _check_options(prompt is None, queries is None, all_scores, output, resident)
    options = _query_options(k, damping, normalize)
    # Bad text and bad files are refused before the model loads.
    examples = [query_example(prompt, completion)] if queries is None else load_examples(queries)
    use_threads(threads)
    engine = QueryEngine.open(
        index, model=model, device=device, resident=cast("Resident", resident)
    )
    try:
        for q in examples:
            engine.check_query(q)
        options = engine.options_for(options)  # refuses a damping for an absolute lambda
        results = _score_all(engine, examples, output, options)
        directions = ("proponents", "opponents") if opponents else ("proponents",)
        out = [_rows(engine, result, q, directions) for result, q in results]
    finally:
        engine.close()
    _print(out if queries is not None else out[0], examples, as_json)
    if output:
        typer.echo(f"scores: {output} ({len(examples)} x {len(engine.index)} float32)", err=True)


def _check_options(
    no_prompt: bool,
    no_queries: bool,
    all_scores: bool,
    output: str | None,
    resident: str,
) -> None:
    """Flags that do not go together or are out of range: refused before anything loads."""
    if no_prompt == no_queries:
        raise ConfigError("give a PROMPT or --queries FILE (one of them)")
    if all_scores != (output is not None):
        raise ConfigError("--all-scores and --output go together")
    if resident not in ("auto", "on", "off"):
        raise ConfigError(f"--resident must be auto, on or off, not {resident!r}")


def _query_options(k: int, damping: float | None, normalize: str) -> QueryOptions:
    """The flags' QueryOptions (checked there; its messages name a field, here its flag)."""
    try:
        return QueryOptions(k=k, damping=damping, normalize=cast("Any", normalize))
    except ConfigError as e:
        raise ConfigError(f"--{e}") from None


def _score_all(
    engine: Any, examples: list[Any], output: str | None, options: QueryOptions
) -> list[tuple[Any, int]]:
    """(ScoreResult, row in it) per query, scanned CHUNK queries at a time; with ``output``
    the full score rows go into a .npy memory map."""
    scores = None
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        scores = np.lib.format.open_memmap(
            output, mode="w+", dtype=np.float32, shape=(len(examples), len(engine.index))
        )
    results = []
    for start in range(0, len(examples), CHUNK):
        chunk = examples[start : start + CHUNK]
        result = engine.score(chunk, keep_scores=scores is not None, options=options)
        if scores is not None:
            scores[start : start + len(chunk)] = result.scores
        results += [(result, i) for i in range(len(chunk))]
    if scores is not None:
        scores.flush()
    return results


def _rows(
    engine: Any, result: Any, q: int, directions: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    from indexer.query import top_rows

    out = {}
    for direction in directions:
        top = top_rows(result, q, direction)
        examples = engine.index.examples_at([i for i, _ in top])  # one batched read
        out[direction] = [
            {"rank": r, "example_id": i, "score": s, "text": ex.text, "meta": ex.meta}
            for r, ((i, s), ex) in enumerate(zip(top, examples, strict=True), 1)
        ]
    return out


def _print(out: Any, examples: list[Any], as_json: bool) -> None:
    from indexer.data import snippet

    if as_json:
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for i, rows in enumerate(out if isinstance(out, list) else [out]):
        if isinstance(out, list):
            typer.echo(f"\nquery {i}: {snippet(examples[i].text, 100)}")
        for direction, listed in rows.items():
            typer.echo(f"\n{direction}:")
            for row in listed:
                meta = ", ".join(f"{key}={v}" for key, v in row["meta"].items())
                typer.echo(
                    f"  {row['rank']:3d}. #{row['example_id']:<7d} {row['score']:+.4e}  "
                    f"{snippet(row['text'], 100)}" + (f"  [{meta}]" if meta else "")
                )
