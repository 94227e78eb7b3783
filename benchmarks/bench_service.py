"""Service benchmark: scan throughput, batching, the low-rank path, cached latency.

All figures come from one run on one machine, side by side:

1. Scan throughput. The rows of a real index (default: the quick demo index, built on first
   use) are tiled into a ~``--gb`` GB factor file; we time a plain sequential read of that
   file, the block reader alone (read + bf16 decode), and full scans for 1 query, 32 batched
   queries and 32 queries one after another, on the exact path and on the low-rank path
   (method.md section 4) for each ``--ranks`` c_q. Queries are real Shakespeare speeches that
   are not in the quick index, preconditioned by the index's own curvature.
2. Deviation of the low-rank path from the exact one, on the real (untiled) index: recall of
   the exact top-k among the returned top-k (both directions; rows whose text equals the query
   are left out), the relative error of the scan scores, and the per-query residual.
3. Latency of cached queries through a real ``lorif serve`` over HTTP: in-process LRU, and
   Redis (a private redis-server started here, if the binary exists).

    python -m benchmarks.bench_service [--index PATH] [--gb 1] [--ranks 1,4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from indexer.data import Example
from indexer.engine.scoring import LowRankQueries, score_store
from indexer.query import QueryEngine
from indexer.storage.codec import NUMPY_STORAGE
from indexer.storage.store import MmapFactorStore
from indexer.storage.streaming import BlockReader
from tests.helpers import free_port, start_redis

BATCH = 32


def tiled_store(engine: QueryEngine, gb: float, path: Path) -> MmapFactorStore:
    """The index's rows repeated into a raw file of about ``gb`` GB."""
    src = engine.index.store()
    raw = np.ascontiguousarray(src.read(0, len(src)))
    n = max(len(src), int(gb * 1e9) // raw[0].nbytes)
    with path.open("wb") as fh:
        for start in range(0, n, len(src)):
            fh.write(raw[: min(len(src), n - start)].tobytes())
    return MmapFactorStore(src.layout, str(path), 0, n, src.dtype)


def plain_read_s(path: Path, chunk: int = 16 << 20) -> float:
    buf = bytearray(chunk)
    view = memoryview(buf)
    t = time.perf_counter()
    with path.open("rb", buffering=0) as fh:
        while fh.readinto(view):
            pass
    return time.perf_counter() - t


def reader_only_s(store: MmapFactorStore, block_rows: int) -> float:
    t = time.perf_counter()
    for _ in BlockReader(store, block_rows):
        pass
    return time.perf_counter() - t


def scan_s(store, p: dict[str, torch.Tensor], rank: int, block_rows: int) -> float:
    t = time.perf_counter()
    score_store(store, p, k=20, block_rows=block_rows, keep_scores=False, query_rank=rank)
    return time.perf_counter() - t


def best(fn, repeat: int = 2) -> float:
    return min(fn() for _ in range(repeat))


def query_examples(engine: QueryEngine, n: int) -> list[Example]:
    """Speeches that are not in the index (the quick index holds every 15th speech)."""
    from lorif_demo.corpora.shakespeare import load_speeches

    indexed = set(engine.index.column("completion"))
    out = []
    for i, r in enumerate(load_speeches()):
        if i % 15 == 7 and r["text"] not in indexed and len(r["text"]) > 80:
            out.append(Example(completion=r["text"]))
        if len(out) == n:
            break
    return out


def throughput(engine: QueryEngine, p: dict[str, torch.Tensor], args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="lorif-bench-"))
    try:
        store = tiled_store(engine, args.gb, tmp / "factors.bin")
        nbytes = len(store) * store.layout.width * NUMPY_STORAGE[store.dtype].itemsize
        plain_read_s(tmp / "factors.bin")  # warm the page cache for every contender
        out = {
            "rows": len(store),
            "gb": nbytes / 1e9,
            "block_rows": args.block_rows,
            "plain_read_gbps": nbytes / 1e9 / best(lambda: plain_read_s(tmp / "factors.bin")),
            "reader_gbps": nbytes / 1e9 / best(lambda: reader_only_s(store, args.block_rows)),
        }
        one = {n: t[:1] for n, t in p.items()}
        for rank in [0, *args.ranks]:
            name = "exact" if rank == 0 else f"lowrank_c{rank}"
            t1 = best(lambda rank=rank: scan_s(store, one, rank, args.block_rows))
            tb = best(lambda rank=rank: scan_s(store, p, rank, args.block_rows))
            ts = sum(
                scan_s(store, {n: t[i : i + 1] for n, t in p.items()}, rank, args.block_rows)
                for i in range(BATCH)
            )
            out[name] = {
                "one_s": t1,
                "batched_s": tb,
                "sequential_s": ts,
                "one_gbps": nbytes / 1e9 / t1,
                "batched_over_one": tb / t1,
                "sequential_over_batched": ts / tb,
            }
            print(
                f"  {name:12s} 1 query {t1:6.2f} s ({nbytes / 1e9 / t1:5.2f} GB/s) | "
                f"{BATCH} batched {tb:6.2f} s = {tb / t1:5.2f}x one | {BATCH} sequential "
                f"{ts:6.2f} s = {ts / tb:5.2f}x batched",
                flush=True,
            )
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def deviation(
    engine: QueryEngine,
    queries: list[Example],
    p: dict[str, torch.Tensor],
    ranks: list[int],
    candidates: int,
    ks: tuple[int, ...] = (10, 100),
) -> dict:
    """Low-rank vs exact on the real index (full score vectors, own text masked out)."""
    store = engine.index.store()
    exact = score_store(store, p, k=1, keep_scores=True).scores
    texts = engine.index.column("completion")
    mask = np.array([[t == q.completion for t in texts] for q in queries])
    exact = np.where(mask, np.nan, exact)
    out = {}
    for rank in ranks:
        lr = LowRankQueries.factor(p, rank)
        approx = score_store(store, p, k=1, keep_scores=True, query_rank=rank).scores
        approx = np.where(mask, np.nan, approx)
        rel = np.nanmean(
            [
                np.linalg.norm(np.nan_to_num(a - e)) / np.linalg.norm(np.nan_to_num(e))
                for a, e in zip(approx, exact, strict=False)
            ]
        )
        corr = np.mean(
            [
                np.corrcoef(a[~np.isnan(a)], e[~np.isnan(e)])[0, 1]
                for a, e in zip(approx, exact, strict=False)
            ]
        )
        rec = {}
        for k in ks:
            hits = []
            for sign in (1, -1):  # proponents, opponents
                for a, e in zip(sign * approx, sign * exact, strict=False):
                    a, e = np.nan_to_num(a, nan=-np.inf), np.nan_to_num(e, nan=-np.inf)
                    truth = set(np.argsort(-e)[:k])
                    cand = np.argsort(-a)[: candidates * k]  # what the scan keeps ...
                    final = cand[np.argsort(-e[cand])[:k]]  # ... re-scored exactly
                    hits.append(len(truth & set(final)) / k)
            rec[f"recall@{k}"] = float(np.mean(hits))
        out[f"c{rank}"] = {
            "scan_rel_err": float(rel),
            "scan_corr": float(corr),
            "residual_mean": float(lr.residual.mean()),
            **rec,
        }
        print(
            f"  c_q={rank}: residual {lr.residual.mean():.3f}, scan corr {corr:.4f}, rel err "
            f"{rel:.3f}, " + ", ".join(f"{k} {v:.3f}" for k, v in rec.items()),
            flush=True,
        )
    return out


def cached_latency(index: str, redis_url: str | None, n: int = 500) -> dict:
    import httpx

    port = free_port()
    env = {**os.environ, "LORIF_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    if redis_url:
        env["LORIF_REDIS_URL"] = redis_url
    lorif = str(Path(sys.executable).with_name("lorif"))
    proc = subprocess.Popen(
        [lorif, "serve", index, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(600):
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            body = {"prompt": "O Romeo, Romeo! wherefore art thou Romeo?", "k": 20}
            assert not client.post("/v1/attributions", json=body).json()["cached"]
            lat, server = [], []
            for _ in range(n):
                t = time.perf_counter()
                r = client.post("/v1/attributions", json=body).json()
                lat.append((time.perf_counter() - t) * 1000)
                assert r["cached"], r
                server.append(r["timings"]["total_ms"])
        return {
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "server_p50_ms": float(np.percentile(server, 50)),
            "n": n,
        }
    finally:
        proc.terminate()
        proc.wait(30)


def latency(index: str) -> dict:
    out = {"lru": cached_latency(index, None)}
    if shutil.which("redis-server"):
        port = free_port()
        redis = start_redis(port)  # returns once it answers
        try:
            out["redis"] = cached_latency(index, f"redis://127.0.0.1:{port}/0")
        finally:
            redis.terminate()
            redis.wait(10)
    for name, r in out.items():
        print(
            f"  cached via {name:5s}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
            f"(server-side p50 {r['server_p50_ms']:.2f} ms; {r['n']} requests)",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default=None, help="Index to use (default: quick demo index).")
    ap.add_argument("--gb", type=float, default=1.0, help="Size of the tiled factor file.")
    ap.add_argument("--ranks", default="1,4", help="Low-rank query ranks c_q to compare.")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--block-rows", type=int, default=4096)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--json", default=None, help="Also write the figures to this file.")
    args = ap.parse_args()
    args.ranks = [int(r) for r in args.ranks.split(",") if r]

    if args.index is None:
        from lorif_demo.demo import ensure_demo_index

        args.index = str(ensure_demo_index(".lorif-demo", quick=True))
    engine = QueryEngine.open(args.index, device="auto")
    device = engine.featurizer.device
    print(
        f"index {args.index}: {len(engine.index)} rows x "
        f"{engine.index.bytes_per_example()[0]} B; device {device}; "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    queries = query_examples(engine, BATCH)
    p = engine.preconditioned(queries)
    figures: dict = {"device": str(device), "index": args.index}

    print(f"scan (rows tiled to ~{args.gb:g} GB, page cache warm):", flush=True)
    figures["scan"] = throughput(engine, p, args)
    s = figures["scan"]
    print(
        f"  plain sequential read {s['plain_read_gbps']:.2f} GB/s | block reader alone "
        f"{s['reader_gbps']:.2f} GB/s | exact 1-query scan {s['exact']['one_gbps']:.2f} GB/s "
        f"= {s['exact']['one_gbps'] / s['plain_read_gbps']:.2f}x plain read",
        flush=True,
    )
    print(
        f"low-rank deviation ({len(queries)} queries, {len(engine.index)} rows, candidates "
        f"{args.candidates} x k):",
        flush=True,
    )
    figures["deviation"] = deviation(engine, queries, p, args.ranks, args.candidates)
    engine.close()
    if not args.skip_latency:
        print("cached queries over HTTP (lorif serve):", flush=True)
        figures["latency"] = latency(args.index)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
