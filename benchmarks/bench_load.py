"""Load and fault run against a real ``lorif serve`` with a real Redis (hardening issue).

64 concurrent clients send a mix for ``--seconds``: hot attributions (queries cached before
the run; answered from the cache unless Redis is down), uncached attributions (fresh held-out
speeches), explanations, example reads and malformed bodies. A third of the way in Redis is
killed (SIGKILL); two thirds in it is restarted on the same port. Printed: throughput, latency
p50/p99 per kind (client side; for answers served from the cache also the server's own
``timings.total_ms``), the status codes, the server's RSS (sampled every 2 s), and the count
of failures: anything other than the expected answer, 429 or 504 (goal 0). The scorer is
saturated throughout (uncached queries arrive faster than it scans).

    python -m benchmarks.bench_load [--index PATH] [--seconds 45] [--concurrency 64] [--json F]
                                    [--checkout DIR]   # serve another checkout: a baseline
                                    [--scorer default|process|thread|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
import psutil

from tests.helpers import free_port, start_redis

HOT = 20  # cached queries
WARM_S = 5.0  # latencies are also reported without the first seconds of the run (cold start)
MIX = [("hot", 0.5), ("uncached", 0.25), ("explain", 0.05), ("example", 0.1), ("bad", 0.1)]
EXPECTED = {
    "cache hit": {200},
    "hot": {200},
    "uncached": {200, 429, 504},
    "explain": {200, 429, 504},
    "example": {200},
    "bad": {413, 415, 422},
}


def speeches(n: int) -> list[str]:
    """Held-out speeches (the quick index holds every 15th)."""
    from lorif_demo.corpora.shakespeare import load_speeches

    return [
        r["text"]
        for i, r in enumerate(load_speeches())
        if i % 15 != 0 and 40 < len(r["text"]) < 600
    ][:n]


def start_server(
    index: str, redis_port: int, checkout: str | None, scorer: str | None = None
) -> tuple[subprocess.Popen, str]:
    """``lorif serve`` of this checkout, or of another one (``checkout``: a baseline run side
    by side; its ``lorif`` is started from its own ``service.cli`` or ``lorif_cli.main``)."""
    port = free_port()
    env = {
        **os.environ,
        "LORIF_DEVICE": "cpu",
        "LORIF_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        **({"LORIF_SCORER": scorer} if scorer else {}),
    }
    command = [str(Path(sys.executable).with_name("lorif"))]
    if checkout:
        env["PYTHONPATH"] = checkout
        entry = "lorif_cli.main" if (Path(checkout) / "lorif_cli").exists() else "service.cli"
        command = [
            sys.executable,
            "-c",
            # this checkout's editable install would shadow the other one's packages
            "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in "
            f"getattr(f, '__module__', '')]; from {entry} import main; sys.argv[0] = 'lorif'; "
            "main()",
        ]
    proc = subprocess.Popen(
        [*command, "serve", str(Path(index).resolve()), "--port", str(port)],
        env=env,
        cwd=checkout,  # `python -c` puts the working directory first on sys.path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("lorif serve did not become ready")


def request(kind: str, rng: random.Random, hot: list[str], fresh: list[str]) -> tuple[str, dict]:
    if kind == "hot":
        return "/v1/attributions", {"json": {"prompt": rng.choice(hot), "k": 20}}
    if kind == "uncached":
        return "/v1/attributions", {
            "json": {
                "prompt": fresh.pop() if fresh else rng.choice(hot) + f" {rng.random()}",
                "k": 20,
            }
        }
    if kind == "explain":
        return "/v1/explanations", {
            "json": {"prompt": rng.choice(hot), "example_id": rng.randrange(100)}
        }
    if kind == "example":
        return f"/v1/examples/{rng.randrange(1000)}", {}
    bad = rng.choice(
        [
            {"json": {"prompt": ""}},
            {"json": {"prompt": "x", "k": True}},
            {"content": b"x" * 70_000, "headers": {"content-type": "application/json"}},
            {"content": b"prompt=x", "headers": {"content-type": "text/plain"}},
        ]
    )
    return "/v1/attributions", bad


async def client(
    url: str,
    started: float,
    stop: float,
    seed: int,
    hot: list[str],
    fresh: list[str],
    log: list[tuple[str, int, float, float | None, float]],
) -> None:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < stop:
            kind = rng.choices(kinds, weights)[0]
            path, kw = request(kind, rng, hot, fresh)
            t0 = time.perf_counter()
            try:
                r = await (
                    http.post(path, **kw)
                    if path.startswith(("/v1/attributions", "/v1/explanations"))
                    else http.get(path)
                )
                status = r.status_code
                body = r.json() if status == 200 and kind in ("hot", "uncached") else {}
                if body.get("cached"):  # answered from the cache (Redis, or Redis was down)
                    kind, server_ms = "cache hit", body["timings"]["total_ms"]
                else:
                    server_ms = None
            except httpx.HTTPError:
                status, server_ms = -1, None
            log.append((kind, status, (time.perf_counter() - t0) * 1000, server_ms, t0 - started))


def probe(url: str, prompts: list[str], seconds: float, out: str) -> None:
    """In a process of its own: one client asking hot queries one after another (every 20 ms),
    timing each cache hit; what a user sees while the load generator saturates the scorer.
    Between them it times GET /health/live (no work in the app): the floor that the machine's
    scheduling and HTTP alone put under any answer."""
    times: list[tuple[float, float]] = []
    floor: list[tuple[float, float]] = []  # GET /health/live: what any answer costs here
    stop = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60) as http:
        i = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = http.post("/v1/attributions", json={"prompt": prompts[i % len(prompts)], "k": 20})
            ms = (time.perf_counter() - t0) * 1000
            at = seconds - (stop - time.monotonic())
            if r.status_code == 200 and r.json()["cached"]:
                times.append((ms, at))
            time.sleep(0.01)
            t0 = time.perf_counter()
            http.get("/health/live")
            floor.append(((time.perf_counter() - t0) * 1000, at))
            i += 1
            time.sleep(0.01)
    Path(out).write_text(json.dumps({"hits": times, "live": floor}))


def rss_mb(pid: int) -> float:
    """RSS of the server and its children (the scorer process), MiB."""
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def sample_rss(pid: int, stop: float, out: list[float]) -> None:
    while time.monotonic() < stop:
        out.append(rss_mb(pid))
        time.sleep(2)


def faults(redis: list[subprocess.Popen], port: int, seconds: float) -> None:
    time.sleep(seconds / 3)
    redis[0].send_signal(signal.SIGKILL)
    redis[0].wait()
    print(f"  t={seconds / 3:.0f} s: redis killed", flush=True)
    time.sleep(seconds / 3)
    redis[0] = start_redis(port)
    print(f"  t={2 * seconds / 3:.0f} s: redis restarted", flush=True)


def percentiles(values: list[float]) -> dict[str, float]:
    return (
        {
            "p50": float(np.percentile(values, 50)),
            "p99": float(np.percentile(values, 99)),
            "n": len(values),
        }
        if values
        else {}
    )


def latencies(samples: list[tuple[float, float]], seconds: float) -> dict[str, dict[str, float]]:
    """p50/p99 over the whole run, after the first WARM_S seconds (the burst of every
    client's first request: 64 new connections, pools filling), and per phase of the faults
    (Redis up, down, restarted)."""
    third = seconds / 3
    return {
        "all": percentiles([ms for ms, _ in samples]),
        f"after {WARM_S:g} s": percentiles([ms for ms, t in samples if t >= WARM_S]),
        "redis up": percentiles([ms for ms, t in samples if WARM_S <= t < third]),
        "redis down": percentiles([ms for ms, t in samples if third <= t < 2 * third]),
        "redis restarted": percentiles([ms for ms, t in samples if t >= 2 * third]),
    }


def report(
    log: list[tuple[str, int, float, float | None, float]], seconds: float, rss: tuple[float, float]
) -> dict:
    by_kind: dict[str, list[float]] = defaultdict(list)
    codes: dict[str, Counter] = defaultdict(Counter)
    failures = 0
    for kind, status, ms, _, _ in log:
        codes[kind][status] += 1
        failures += status not in EXPECTED[kind]
        if status == 200:
            by_kind[kind].append(ms)
    return {
        "requests": len(log),
        "seconds": seconds,
        "throughput_rps": len(log) / seconds,
        "failures": failures,
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[1],
        "codes": {k: dict(v) for k, v in codes.items()},
        "latency_ms": {k: percentiles(v) for k, v in by_kind.items() if v},
        "cache_hit_client_ms": latencies(
            [(ms, t) for k, st, ms, _, t in log if k == "cache hit"], seconds
        ),
        "cache_hit_server_ms": latencies(
            [(s, t) for _, _, _, s, t in log if s is not None], seconds
        ),
    }


def run_once(args: argparse.Namespace, scorer: str | None) -> dict:
    """One load run against a fresh server (``scorer``: LORIF_SCORER for it, None = its
    default) with its own Redis; the figures."""
    texts = speeches(HOT + 5000)
    hot, fresh = texts[:HOT], texts[HOT:]
    redis_port = free_port()
    redis = [start_redis(redis_port)]
    proc, url = start_server(args.index, redis_port, args.checkout, scorer)
    try:
        for prompt in hot:  # cache the hot queries
            httpx.post(f"{url}/v1/attributions", json={"prompt": prompt, "k": 20}, timeout=120)
        rss0 = rss_mb(proc.pid)
        print(
            f"load ({scorer or 'default'} scorer): {args.concurrency} clients for "
            f"{args.seconds:.0f} s against {url} (index {args.index})",
            flush=True,
        )
        log: list = []
        probe_file = str(Path(tempfile.mkdtemp()) / "probe.json")
        samples: list[float] = []
        stop, started = time.monotonic() + args.seconds, time.perf_counter()

        async def run() -> None:
            loop = asyncio.get_running_loop()
            chaos = loop.run_in_executor(None, faults, redis, redis_port, args.seconds)
            prober = multiprocessing.get_context("spawn").Process(
                target=probe, args=(url, hot, args.seconds, probe_file)
            )
            prober.start()
            rss = loop.run_in_executor(None, sample_rss, proc.pid, stop, samples)
            await asyncio.gather(
                *(client(url, started, stop, i, hot, fresh, log) for i in range(args.concurrency))
            )
            await chaos
            await rss
            await loop.run_in_executor(None, prober.join)

        t0 = time.monotonic()
        asyncio.run(run())
        figures = report(log, time.monotonic() - t0, (rss0, rss_mb(proc.pid)))
        figures["scorer"] = scorer or "default"
        figures["rss_samples_mb"] = [round(x) for x in samples]
        probed = json.loads(Path(probe_file).read_text())
        figures["probe_cache_hit_ms"] = latencies(probed["hits"], args.seconds)
        figures["probe_live_ms"] = latencies(probed["live"], args.seconds)
        figures["ready_after_redis_restart"] = httpx.get(f"{url}/health/ready").json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        redis[0].kill()
    return figures


def compare(runs: list[dict]) -> None:
    """The cache-hit tails and throughput of several runs side by side (p50/p99 in ms, after
    the first WARM_S seconds): server = the app's own timing of a hit, probe = one client's
    hits end to end, live = the same client's GET /health/live (the floor under any answer)."""
    after = f"after {WARM_S:g} s"
    print(f"{'scorer':>8} {'req/s':>7} {'fail':>5} {'server':>11} {'probe':>11} {'live':>11}")
    for f in runs:
        cells = [
            f"{x['p50']:5.1f}/{x['p99']:5.1f}"
            for x in (
                f["cache_hit_server_ms"][after],
                f["probe_cache_hit_ms"][after],
                f["probe_live_ms"][after],
            )
        ]
        print(f"{f['scorer']:>8} {f['throughput_rps']:7.1f} {f['failures']:5d} " + " ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default=None)
    ap.add_argument("--seconds", type=float, default=45)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--json", default=None)
    ap.add_argument("--checkout", default=None, help="Serve another checkout (a baseline).")
    ap.add_argument(
        "--scorer",
        choices=["default", "process", "thread", "both"],
        default="default",
        help="The server's scorer setting; both = a thread run, then a process run.",
    )
    args = ap.parse_args()
    if args.index is None:
        from lorif_demo.demo import ensure_demo_index

        args.index = str(ensure_demo_index(".lorif-demo", quick=True, progress=False))
    modes = {"default": [None], "both": ["thread", "process"]}.get(args.scorer, [args.scorer])
    runs = [run_once(args, mode) for mode in modes]
    print(json.dumps(runs if len(runs) > 1 else runs[0], indent=2))
    compare(runs)
    if args.json:
        Path(args.json).write_text(json.dumps(runs if len(runs) > 1 else runs[0], indent=2))


if __name__ == "__main__":
    main()
