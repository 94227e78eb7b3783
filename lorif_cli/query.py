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
RESIDENT = typer.Option(
    "auto", help="Keep the factor rows in device memory: auto (on a GPU when they fit), on, off."
)
DAMPING = typer.Option(
    None,
    help="Relative damping alpha for these queries (lambda = alpha * the layer's mean top "
    "eigenvalue; default: the build's --damping). Exact: equals an index built with it.",
)
NORMALIZE = typer.Option(
    "none", help="none | unit: cosines under H^-1 (the examples' norms: one extra pass)."
)
TOTALS_BY = typer.Option(
    None, help="Also sum every example's score per value of this metadata key (e.g. play)."
)
FULL_TEXT = typer.Option(False, "--full-text", help="JSON: each result's full text.")
VERBATIM = typer.Option(
    True, help="Also list examples holding the query's words verbatim (its verbatim table)."
)


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
    resident: str = RESIDENT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    damping: float = DAMPING,
    normalize: str = NORMALIZE,
    totals_by: str = TOTALS_BY,
    full_text: bool = FULL_TEXT,
    verbatim: bool = VERBATIM,
) -> None:
    """Top-k proponents (and opponents) of queries among the indexed examples. --json prints
    the same answer as POST /v1/attributions (one per query: a list for --queries)."""
    from indexer.data import load_examples, query_example
    from indexer.query import QueryEngine
    from indexer.threads import use_threads

    _check_options(prompt is None, queries is None, all_scores, output, resident)
    direction = "both" if opponents else "proponents"
    options = _query_options(k, damping, normalize, direction, totals_by, verbatim)
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
        out = _score_all(engine, examples, output, options, full_text)
    finally:
        engine.close()
    _print(out, examples, as_json, queries is not None)
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


def _query_options(
    k: int,
    damping: float | None,
    normalize: str,
    direction: str,
    totals_by: str | None,
    verbatim: bool,
) -> QueryOptions:
    """The flags' QueryOptions (checked there; its messages name a field, here its flag)."""
    try:
        return QueryOptions(
            k=k, direction=cast("Any", direction), damping=damping,
            normalize=cast("Any", normalize), totals_by=totals_by, verbatim=verbatim,
        )  # fmt: skip
    except ConfigError as e:
        raise ConfigError("--" + str(e).replace("_", "-", 1)) from None


def _score_all(
    engine: Any, examples: list[Any], output: str | None, options: QueryOptions, full_text: bool
) -> list[dict[str, Any]]:
    """Each query's answer (``indexer.answer_queries``: the API's shape), scanned CHUNK
    queries at a time; with ``output`` the full score rows go into a .npy memory map."""
    from indexer import answer_queries

    scores = None
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        scores = np.lib.format.open_memmap(
            output, mode="w+", dtype=np.float32, shape=(len(examples), len(engine.index))
        )
    out = []
    for start in range(0, len(examples), CHUNK):
        chunk = examples[start : start + CHUNK]
        answers, result = answer_queries(engine, chunk, options, full_text, scores is not None)
        if scores is not None:
            scores[start : start + len(chunk)] = result.scores
        out += [a.to_dict() for a in answers]
    if scores is not None:
        scores.flush()
    return out


def _print(out: list[dict[str, Any]], examples: list[Any], as_json: bool, many: bool) -> None:
    from indexer.data import snippet

    if as_json:
        typer.echo(json.dumps(out if many else out[0], indent=2, ensure_ascii=False))
        return
    for i, answer in enumerate(out):
        if many:
            typer.echo(f"\nquery {i}: {snippet(examples[i].text, 100)}")
        for direction in ("proponents", "opponents"):
            if direction not in answer:
                continue
            typer.echo(f"\n{direction}:")
            for row in answer[direction]:
                meta = ", ".join(f"{key}={v}" for key, v in row["meta"].items())
                mark = (
                    f"  (verbatim {row['verbatim_words']} words)" if "verbatim_words" in row else ""
                )
                typer.echo(
                    f"  {row['rank']:3d}. #{row['example_id']:<7d} {row['score']:+.4e}  "
                    f"{snippet(row['snippet'], 100)}" + (f"  [{meta}]" if meta else "") + mark
                )
        _print_extras(answer)


def _print_extras(answer: dict[str, Any]) -> None:
    """The verbatim matches and the totals of one answer, as text."""
    if "verbatim" in answer:
        typer.echo("\nverbatim (the query's words, word for word; text search, not influence):")
        if not answer["verbatim"]:
            typer.echo("  none: no example holds 4 or more of the query's words in a row")
        for m in answer["verbatim"]:
            typer.echo(f"  {m['words']:3d} words  #{m['example_id']:<7d} “{m['text']}”")
    if "totals" in answer:
        t = answer["totals"]
        typer.echo(f"\ntotals by {t['key']} (all {t['rows']:,} examples, {t['groups']} values):")
        for e in t["highest"][:10]:
            typer.echo(f"  {e['sum']:+.4e}  {e['value'] or '(none)'}  ({e['rows']} examples)")
