"""``lorif index build | add | curvature | info | verify``: every BuildConfig field is one
``build`` flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import typer

from indexer import curvature_method
from indexer.config import BuildConfig

from .flags import command, dataclass_flags, to_dataclass

index_app = typer.Typer(no_args_is_help=True, help="Build and inspect index files.")
BUILD_FLAGS = dataclass_flags(BuildConfig)


def _build(**values: Any) -> None:
    """Build a LoRIF index (resumes an interrupted build with the same settings)."""
    from indexer.build import build_index

    cfg = to_dataclass(BuildConfig, BUILD_FLAGS, values)
    if cfg.nproc > 1 and "WORLD_SIZE" not in os.environ:
        cfg.validate()
        raise typer.Exit(_torchrun(cfg.nproc))
    path = build_index(cfg)
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"index written: {path}")
        _print_info(info_dict(str(path)))


def _torchrun(nproc: int) -> int:
    """Run this same command under torch's launcher with ``nproc`` processes (less --nproc);
    its exit code."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip or a.startswith("--nproc="):
            skip = False
            continue
        skip = a == "--nproc"
        if not skip:
            args.append(a)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, f"--nproc-per-node={nproc}", "-m", "lorif_cli.main", *args]
    code = subprocess.run(command).returncode
    if code:
        typer.echo(
            f"error: the build on {nproc} processes failed (exit code {code}); rerun the same "
            "command to finish it (finished rows are kept)",
            err=True,
        )
    return code


index_app.command("build")(command(_build, BUILD_FLAGS))


def info_dict(path: str) -> dict[str, Any]:
    """The index's summary (the same as GET /v1/index) plus where it is and its file size."""
    from indexer.storage.reader import Index
    from indexer.verbatim import verbatim_summary

    with Index(path) as index:
        info = index.manifest.build_info or {}
        return {
            "path": path,
            **index.summary(),
            "file_bytes": index.disk_bytes(),
            "featurize_seconds": info.get("featurize_seconds_this_run"),
            "verbatim": verbatim_summary(index),
        }


def _print_info(d: dict[str, Any]) -> None:
    total_d = sum(x["D"] for x in d["layers"])
    lines = [
        f"index          {d['path']}",
        f"fingerprint    {d['fingerprint']}",
        f"model          {d['model'].get('spec') or d['model'].get('name')}",
        f"examples (N)   {d['n_examples']}"
        + (
            f"  (curvature over the first {d['curvature_rows']}: `lorif index curvature`)"
            if d["curvature_rows"] != d["n_examples"]
            else ""
        ),
        f"layers         {d['n_layers']}  (sum D = {total_d})",
        f"rank c         {d['rank_c']}"
        + (
            f" (the largest; chosen per layer for {d['bytes_budget']} bytes/example)"
            if d.get("bytes_budget")
            else ""
        )
        + (" (truncated in the K-FAC-whitened norm)" if d["truncation"] == "kfac" else "")
        + "   "
        + f"curvature {curvature_method(d['curvature']).describe(d['curvature_rank_r'])}"
        + f" ({d['basis_bytes'] / 2**20:.1f} MiB)   dtype {d['storage_dtype']}",
        f"bytes/example  {d['stored_bytes_per_example']:.1f} stored, {d['bytes_per_example']} "
        "= c*sum(d1+d2)*bytes/value",
        f"dense/example  {d['dense_bytes_per_example']} (LoGRA-style sum d1*d2), "
        f"ratio {d['dense_ratio']:.1f}x",
        f"size on disk   {d['file_bytes'] / 2**20:.1f} MiB"
        + (f" in {d['shards']} shards" if d.get("shards") else "")
        + (
            f" (factors featurized in {d['featurize_seconds']:.1f} s)"
            if d.get("featurize_seconds") is not None
            else ""
        ),
        _verbatim_line(d.get("verbatim")),
        "layer                                    in x out      d1 x d2      D    c  lambda",
    ]
    for x in d["layers"]:
        lines.append(
            f"  {x['name'][:38]:38s} {x['in_dim']:5d}x{x['out_dim']:<6d} "
            f"{x['d1']:4d}x{x['d2']:<5d} {x['D']:7d} {x['c']:4d}  {x['lambda']:.3g}"
        )
    typer.echo("\n".join(lines))


@index_app.command("add")
def add(
    path: str = typer.Argument(..., help="A sharded index (a directory built with --shard-size)."),
    data: str = typer.Option(..., "--data", help="Examples to add (.jsonl or a saved dataset)."),
    limit: int = typer.Option(0, "--limit", help="Add only the first LIMIT examples (0 = all)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0 = available)."),
    refresh: bool = typer.Option(
        True,
        "--curvature/--no-curvature",
        help="Refresh the curvature over every shard (else keep the basis of the rows before; "
        "`lorif index curvature` refreshes it later).",
    ),
) -> None:
    """Add examples as new shards, with the index's own model and settings (refused when they
    differ), then refresh the curvature over every shard and publish atomically."""
    from indexer.build import add_examples

    before = info_dict(path)["n_examples"]
    add_examples(path, data, limit=limit, device=device, threads=threads, curvature=refresh)
    d = info_dict(path)
    typer.echo(f"added {d['n_examples'] - before} examples to {path}")
    _print_info(d)


@index_app.command("curvature")
def curvature(
    path: str = typer.Argument(..., help="A sharded index (a directory)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0 = available)."),
) -> None:
    """Recompute the curvature basis over every shard and publish it atomically."""
    from indexer.build import refresh_curvature

    fingerprint = refresh_curvature(path, device=device, threads=threads)
    typer.echo(f"curvature refreshed: {path} (fingerprint {fingerprint})")


def _verbatim_line(v: dict[str, Any] | None) -> str:
    if v is None:
        return "verbatim       none (`lorif index verbatim PATH` builds the phrase table)"
    state = "" if v["current"] else "  STALE: rebuild with `lorif index verbatim PATH`"
    return (
        f"verbatim       {v['bytes'] / 2**20:.1f} MiB phrase table over {v['n_examples']} "
        f"examples, built in {v['build_seconds']:.1f} s{state}"
    )


@index_app.command("verbatim")
def verbatim(path: str = typer.Argument(..., help="Index file or directory.")) -> None:
    """(Re)build the index's verbatim phrase table (SQLite FTS5; builds write it already)."""
    from indexer.storage.reader import Index
    from indexer.verbatim import build_verbatim

    with Index(path) as index:
        d = build_verbatim(index)
    typer.echo(
        f"verbatim table: {d['path']} ({d['bytes'] / 2**20:.1f} MiB, {d['added_rows']} rows "
        f"added in {d['build_seconds']:.1f} s)"
    )


@index_app.command("example-queries")
def example_queries(
    path: str = typer.Argument(..., help="Index file or directory."),
    queries: str = typer.Argument(
        ..., help="A .jsonl of queries: `text`, or `prompt` + `completion`; optional `note`."
    ),
) -> None:
    """Store the example queries the page offers for this index when no query is typed."""
    from indexer import ExampleQuery, Index, load_examples, write_example_queries

    with Index(path):  # an index, not any path
        pass
    rows = [
        ExampleQuery(e.prompt, e.completion or "", str(e.meta.get("note", "")))
        for e in load_examples(queries)
    ]
    typer.echo(f"example queries: {write_example_queries(path, rows)} ({len(rows)})")


@index_app.command("info")
def info(
    path: str = typer.Argument(..., help="Index file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Summary of an index: N, layers, D, c, r, bytes per example vs dense."""
    d = info_dict(path)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
    else:
        _print_info(d)


@index_app.command("verify")
def verify(
    path: str = typer.Argument(..., help="Index file."),
    fast: bool = typer.Option(False, "--fast", help="Skip the factor rows (the bulk)."),
) -> None:
    """Check every stored byte against the checksums written at build time."""
    from indexer.storage.reader import Index
    from indexer.threads import available_cpus

    with Index(path) as index:
        report = index.verify("fast" if fast else "full", threads=available_cpus())
        checked = (
            f"{report.checked_bytes / 2**20:.1f} MiB of factors"
            if report.checked_bytes
            else "no factor rows (--fast)"
        )
        typer.echo(
            f"ok: {path} matches its {report.method} ({checked}, examples, curvature; "
            f"{report.seconds:.2f} s); fingerprint {index.fingerprint}"
        )
