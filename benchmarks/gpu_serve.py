"""The end-to-end serve figures of bench_gpu: an index of synthetic texts built with the demo
model on the device, `lorif serve` on it, then an uncached query at a time, 32 distinct
queries at once, and cached answers (loopback only; nothing from the network)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_indexing import synthetic
from indexer import BuildConfig, CurvatureConfig, build_index
from tests.helpers import ROOT, free_port

MODEL = ROOT / "models" / "shakespeare-llama"


def wait_ready(client, seconds: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if client.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("lorif serve did not become ready")


async def concurrent(url: str, prompts: list[str]) -> tuple[float, list[float]]:
    """All ``prompts`` at once: (wall seconds, each request's milliseconds)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(prompt: str) -> float:
            t = time.perf_counter()
            r = await client.post("/v1/attributions", json={"prompt": prompt, "k": 10})
            r.raise_for_status()
            return (time.perf_counter() - t) * 1000

        t0 = time.perf_counter()
        ms = await asyncio.gather(*(one(p) for p in prompts))
        return time.perf_counter() - t0, list(ms)


def serve_figures(device: torch.device, n: int) -> dict[str, float]:
    """Build an index of ``n`` synthetic texts on ``device``, serve it, measure."""
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.jsonl", Path(tmp) / "index"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic(n, seed=5)))
        cfg = BuildConfig(
            model=str(MODEL), data=str(data), output=str(out), proj_factor=8,
            curvature=CurvatureConfig(rank=64), max_tokens=256, batch_size=16, device=str(device),
        )  # fmt: skip
        build_index(cfg, progress=False)
        port = free_port()
        env = {**os.environ, "LORIF_DEVICE": device.type, "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "lorif_cli.main", "serve", str(out), "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            # short queries: a query is never longer than the index's max_tokens
            prompts = [" ".join(t.split()[:12]) for t in synthetic(16 + 32, seed=9)]
            with httpx.Client(base_url=url, timeout=120) as client:
                wait_ready(client)
                single = []
                for prompt in prompts[:16]:
                    t = time.perf_counter()
                    r = client.post("/v1/attributions", json={"prompt": prompt, "k": 10})
                    single.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200 and not r.json()["cached"], r.text
                wall, each = asyncio.run(concurrent(url, prompts[16:]))
                cached = []
                for _ in range(100):
                    t = time.perf_counter()
                    r = client.post("/v1/attributions", json={"prompt": prompts[0], "k": 10})
                    cached.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200 and r.json()["cached"], r.text
        finally:
            proc.terminate()
            proc.wait(60)
    return {
        "rows": n,
        "uncached_single_p50_ms": float(np.percentile(single, 50)),
        "concurrent_32_wall_s": wall,
        "concurrent_32_p50_ms": float(np.percentile(each, 50)),
        "cached_p50_ms": float(np.percentile(cached, 50)),
    }
