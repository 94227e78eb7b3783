"""``lorif query``: top-k proponents and opponents of one query, as text or JSON."""

from __future__ import annotations

import json
from typing import Any

import typer


def query(
    index: str = typer.Argument(..., help="Index file."),
    prompt: str = typer.Argument(
        ..., help="Query text (all tokens count unless --completion is given)."
    ),
    completion: str = typer.Option(None, help="Completion: then only its tokens count."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Results per direction."),
    opponents: bool = typer.Option(True, help="Also list the lowest scores."),
    model: str = typer.Option(None, help="Model path if it moved since the build."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0 = the CPUs available)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Top-k proponents (and opponents) of a query among the indexed examples."""
    from indexer.data import query_example, snippet
    from indexer.query import QueryEngine, top_rows
    from indexer.threads import use_threads

    query_example(prompt, completion)  # blank text is refused before the model loads
    use_threads(threads)
    engine = QueryEngine.open(index, model=model, device=device)
    try:
        q, _ = engine.checked_query(prompt, completion)
        result = engine.score([q], k=k, keep_scores=False)
        out: dict[str, list[dict[str, Any]]] = {}
        for direction in ("proponents", "opponents") if opponents else ("proponents",):
            top = top_rows(result, 0, direction)
            examples = engine.index.examples_at([i for i, _ in top])
            out[direction] = [
                {"rank": r, "example_id": i, "score": s, "text": ex.text, "meta": ex.meta}
                for r, ((i, s), ex) in enumerate(zip(top, examples, strict=True), 1)
            ]
    finally:
        engine.close()
    if as_json:
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for direction, rows in out.items():
        typer.echo(f"\n{direction}:")
        for row in rows:
            meta = ", ".join(f"{k}={v}" for k, v in row["meta"].items())
            typer.echo(
                f"  {row['rank']:3d}. #{row['example_id']:<7d} {row['score']:+.4e}  "
                f"{snippet(row['text'], 100)}" + (f"  [{meta}]" if meta else "")
            )
