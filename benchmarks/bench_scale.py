"""Scale: a build on 1 vs 2 processes, a scan over >= 10 M rows, and a cost table on paper.

1. Build throughput: the same corpus (the first ``--build-rows`` speeches of the quick demo
   corpus, the demo's settings) built by 1 process and by 2 (torchrun, gloo; each featurizes
   its own shards), side by side in one run; rows/s and the ratio.
2. Scan: a sharded index of ``--shards`` x ``--shard-rows`` rows (default 50 x 200,000 = 10 M,
   48.6 GB of factors in the demo layout). The disk here does not hold that many distinct
   bytes, so the shards are tiled: one shard file of the demo index's rows repeated, hard-linked
   under every shard name (the page cache holds one copy: this measures the scan reading from
   memory, not from a disk). Seconds per query, 1 query and a batch, and GB/s of factors.
3. The cost of 1 B tokens of an 8B model (Llama-3-8B shapes) on paper, from the layout's bytes
   per example and the scan rate measured in 2.

    python -m benchmarks.bench_scale [--build-rows 600] [--shards 50] [--shard-rows 200000]
                                     [--batch 8] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from indexer import Example, Index, QueryEngine
from indexer.storage.manifest import MANIFEST, ShardEntry
from indexer.storage.shard_writer import publish_manifest, shard_name, write_basis
from indexer.storage.writer import IndexWriter

QUERY = Example(prompt="", completion="To be, or not to be, that is the question.")


def build_seconds(model: str, data: Path, out: Path, nproc: int, shard_size: int) -> float:
    """Wall seconds of `lorif index build` with the demo's settings on ``nproc`` processes."""
    cmd = [
        sys.executable, "-m", "lorif_cli.main", "index", "build", "--model", model,
        "--data", str(data), "--output", str(out), "--proj-factor", "8", "--rank", "1",
        "--curvature-rank", "256", "--max-tokens", "256", "--batch-size", "16",
        "--shard-size", str(shard_size), "--nproc", str(nproc),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def build_ratio(model: str, corpus: Path, rows: int, work: Path) -> dict:
    data = work / "build.jsonl"
    lines = corpus.read_text().splitlines()[:rows]
    data.write_text("\n".join(lines) + "\n")
    one = build_seconds(model, data, work / "one", 1, max(1, rows // 4))
    two = build_seconds(model, data, work / "two", 2, max(1, rows // 4))
    return {
        "rows": rows,
        "one_process_s": one,
        "two_processes_s": two,
        "rows_per_s": [rows / one, rows / two],
        "speedup": one / two,
    }


def tiled_index(source: Path, out: Path, shards: int, shard_rows: int) -> Path:
    """A sharded index of ``shards`` hard links to one shard of ``shard_rows`` rows (the rows of
    ``source`` repeated), with ``source``'s basis."""
    with Index(source) as index:
        raw = np.concatenate([index.store().read(p.first, p.first + p.n) for p in index.parts])
        examples = index.examples_at(range(len(index)))
        manifest = index.manifest.replace(shards=None, basis=None)
        curvature, projections = index.curvature(), index.stored_projections()
    reps = -(-shard_rows // len(raw))
    rows = np.tile(raw, (reps, 1))[:shard_rows]
    exs = (examples * reps)[:shard_rows]
    out.mkdir()
    first = out / shard_name(0)
    first.parent.mkdir()
    writer = IndexWriter.create(first, manifest.replace(n_examples=shard_rows), exs, np.ones(
        shard_rows, dtype=np.int32), None)  # fmt: skip
    for start in range(0, shard_rows, 65536):
        ids = np.arange(start, min(start + 65536, shard_rows))
        writer.write_rows(ids, rows[ids])
    digest = writer.finish_shard(threads=os.cpu_count() or 1)
    for k in range(1, shards):
        os.link(first, out / shard_name(k))
    entries = [ShardEntry(shard_name(k), shard_rows, digest) for k in range(shards)]
    basis, basis_digest = write_basis(out, curvature, projections)
    grown = manifest.replace(n_examples=shards * shard_rows, shards=entries)
    publish_manifest(out, grown, basis, basis_digest)
    return out


def scan(index_dir: Path, batch: int) -> dict:
    engine = QueryEngine.open(index_dir, device="cpu", resident="off")
    try:
        n, row_bytes = len(engine.index), engine.index.store().row_bytes
        engine.score([QUERY], k=10, keep_scores=False)  # warm: the page cache, the model
        out = {"rows": n, "factor_gb": n * row_bytes / 1e9, "row_bytes": row_bytes}
        for q in (1, batch):
            t0 = time.perf_counter()
            engine.score([QUERY] * q, k=10, keep_scores=False)
            s = time.perf_counter() - t0
            out[f"queries_{q}"] = {"seconds": s, "gb_per_s": n * row_bytes / 1e9 / s}
        return out
    finally:
        engine.close()


def llama3_8b_cost(scan_gb_per_s: float) -> dict:
    """Bytes per example of Llama-3-8B at f = 16, c = 1, bf16, and 1 B tokens in 1,024-token
    examples; the scan of a query batch at the batch rate measured here (CPU, page cache),
    and the GPU figures as bounds from the hardware's specifications (no GPU measured)."""
    hidden, kv, inter, layers, f = 4096, 1024, 14336, 32, 16
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden)]
    shapes += [(hidden, inter), (hidden, inter), (inter, hidden)]
    lorif = layers * sum(i // f + o // f for i, o in shapes) * 2
    dense = layers * sum((i // f) * (o // f) for i, o in shapes) * 2
    examples = 1e9 / 1024
    store = examples * lorif
    gpus = int(-(-store // 75e9))  # an H100's 80 GB less room for the model and buffers
    return {
        "bytes_per_example": lorif,
        "dense_bytes_per_example": dense,
        "examples": examples,
        "store_gb": store / 1e9,
        "dense_store_tb": examples * dense / 1e12,
        # forward + backward ~ 6 x params FLOP per token, 40 % of an H100's dense bf16 peak
        "build_gpu_hours_at_40pct_mfu_h100": 6 * 8e9 * 1e9 / (0.4 * 989e12) / 3600,
        "scan_s_per_batch_cpu_measured_rate": store / 1e9 / scan_gb_per_s,
        "h100s_to_hold_resident": gpus,
        # a bound, not a measurement: every GPU reads its part once at HBM speed (3.35 TB/s)
        "scan_s_bound_h100_resident": store / gpus / 3.35e12,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-rows", type=int, default=600)
    ap.add_argument("--shards", type=int, default=50)
    ap.add_argument("--shard-rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", default=None)
    ap.add_argument("--index", default=None, help="Rows to tile (default: the quick demo's).")
    ap.add_argument("--corpus", default=None, help="jsonl to build (default: the quick demo's).")
    ap.add_argument("--model", default="shakespeare-llama")
    args = ap.parse_args()
    if args.index is None:
        from lorif_demo.demo import ensure_demo_index

        args.index = ensure_demo_index(".lorif-demo", quick=True, progress=False)
        args.corpus = args.corpus or ".lorif-demo/shakespeare-quick.jsonl"
    source, corpus = Path(args.index), Path(args.corpus)
    with tempfile.TemporaryDirectory(dir=source.parent) as tmp:
        work = Path(tmp)
        figures = {"build": build_ratio(args.model, corpus, args.build_rows, work)}
        print(json.dumps(figures["build"], indent=1), flush=True)
        tiled = tiled_index(source, work / "tiled", args.shards, args.shard_rows)
        assert (tiled / MANIFEST).exists()
        figures["scan"] = scan(tiled, args.batch)
        print(json.dumps(figures["scan"], indent=1), flush=True)
    rate = figures["scan"][f"queries_{args.batch}"]["gb_per_s"]
    figures["llama3_8b_1b_tokens"] = llama3_8b_cost(rate)
    print(json.dumps(figures["llama3_8b_1b_tokens"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
