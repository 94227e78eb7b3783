"""Cluster benchmark: the same index served by one process and by Ray Serve shard groups.

One run, one machine, side by side: a sharded index (the quick demo index's rows tiled into
``--shards`` shards of ``--shard-rows`` rows, hard links to one file) served over HTTP by

1. ``lorif serve INDEX`` — one process (the default process scorer), no Ray;
2. ``lorif serve INDEX --cluster local --cluster-groups 1`` — the scan on one Serve replica
   holding every shard (``--cluster-cpus`` = all the CPUs): the fan-out's cost alone;
3. ``... --cluster-groups 2`` — two replicas, half the shards each, half the CPUs each.

Each is loaded by ``--clients`` closed-loop clients for ``--seconds`` with held-out speeches
that are never repeated (no cache: ``LORIF_CACHE_SIZE=0``, no Redis), so every answer is a
scan; we report answered queries per second and p50/p99 latency under that load, the p50 of
queries sent one at a time (no queueing: the fan-out's own cost), and the ratios.

    python -m benchmarks.bench_cluster [--shards 8] [--shard-rows 10000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.bench_load import speeches
from benchmarks.bench_scale import tiled_index
from indexer import available_cpus
from tests.helpers import free_port


def start(index: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "LORIF_DEVICE": "cpu", "LORIF_CACHE_SIZE": "0"}
    env.pop("LORIF_REDIS_URL", None)
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("lorif")), "serve", str(index), "--port", str(port),
         "--verify", "fast", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"lorif serve {' '.join(extra)} did not become ready")


async def load(url: str, prompts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` closed-loop clients, each asking the next unused prompt until time is up."""
    queue = iter(prompts)
    samples: list[float] = []
    failures = 0
    stop = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        while time.monotonic() < stop:
            prompt = next(queue)
            t0 = time.perf_counter()
            r = await http.post("/v1/attributions", json={"prompt": prompt, "k": 10})
            if r.status_code == 200:
                samples.append((time.perf_counter() - t0) * 1e3)
            else:
                failures += 1

    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.monotonic() - t0
    return {
        "answered": len(samples),
        "failures": failures,
        "queries_per_s": len(samples) / wall,
        "p50_ms": float(np.percentile(samples, 50)) if samples else float("nan"),
        "p99_ms": float(np.percentile(samples, 99)) if samples else float("nan"),
    }


async def warm(url: str, prompts: list[str]) -> None:
    """One query per client at once: the page cache, the replicas, the connections."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        for r in await asyncio.gather(
            *(http.post("/v1/attributions", json={"prompt": p, "k": 10}) for p in prompts)
        ):
            r.raise_for_status()


def run(index: Path, name: str, extra: list[str], prompts: list[str], args) -> dict:
    proc, url = start(index, extra)
    try:
        asyncio.run(warm(url, prompts[: args.clients]))
        alone = []  # one query at a time: latency without queueing (the fan-out's own cost)
        for prompt in prompts[args.clients : args.clients + 8]:
            t0 = time.perf_counter()
            httpx.post(f"{url}/v1/attributions", json={"prompt": prompt, "k": 10}, timeout=300)
            alone.append((time.perf_counter() - t0) * 1e3)
        out = asyncio.run(load(url, prompts[args.clients + 8 :], args.clients, args.seconds))
        out["alone_p50_ms"] = float(np.median(alone))
    finally:
        proc.terminate()
        proc.wait(60)
    print(
        f"  {name:28s} {out['queries_per_s']:6.2f} q/s | p50 {out['p50_ms']:8.0f} ms | "
        f"p99 {out['p99_ms']:8.0f} ms | {out['answered']} answered, {out['failures']} failed | "
        f"one at a time p50 {out['alone_p50_ms']:.0f} ms",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default=None, help="Source index (default: quick demo index).")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--shard-rows", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", default=None, help="Also write the figures to this file.")
    args = ap.parse_args()
    if args.index is None:
        from lorif_demo.demo import ensure_demo_index

        args.index = str(ensure_demo_index(".lorif-demo", quick=True))
    cpus = available_cpus()
    prompts = speeches(20_000)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        index = tiled_index(Path(args.index), Path(tmp) / "index", args.shards, args.shard_rows)
        rows = args.shards * args.shard_rows
        print(
            f"{rows:,} rows in {args.shards} shards; {cpus} CPUs; {args.clients} clients x "
            f"{args.seconds:g} s, every query new (no cache):",
            flush=True,
        )
        configs = {
            "one process (no Ray)": [],
            "Ray Serve, 1 shard group": ["--cluster", "local", "--cluster-groups", "1",
                                         "--cluster-cpus", str(cpus)],
            "Ray Serve, 2 shard groups": ["--cluster", "local", "--cluster-groups", "2",
                                          "--cluster-cpus", str(cpus / 2)],
        }  # fmt: skip
        figures = {"rows": rows, "cpus": cpus, "clients": args.clients, "runs": {}}
        for name, extra in configs.items():
            figures["runs"][name] = run(index, name, extra, prompts, args)
    base, one, two = figures["runs"].values()
    print(
        f"ratios: 1 group / one process {one['queries_per_s'] / base['queries_per_s']:.2f}x q/s, "
        f"p50 {one['p50_ms'] / base['p50_ms']:.2f}x | 2 groups / 1 group "
        f"{two['queries_per_s'] / one['queries_per_s']:.2f}x q/s, p50 "
        f"{two['p50_ms'] / one['p50_ms']:.2f}x | one at a time: 1 group / one process "
        f"{one['alone_p50_ms'] / base['alone_p50_ms']:.2f}x, 2 groups / 1 group "
        f"{two['alone_p50_ms'] / one['alone_p50_ms']:.2f}x",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
