"""Peak memory of the streamed curvature pass on a case where G (N x D) cannot fit in RAM.

Writes N random rank-c factor rows (fp16) to a memory-mapped file, runs compute_curvature over
it and prints peak RSS next to the sizes of G (N*D floats), G^T G (D^2 floats) and the
O(D (r+p)) working set. Run:  python benchmarks/bench_curvature_memory.py [--n 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np
import torch

from indexer.config import CurvatureConfig
from indexer.engine.layout import FactorLayout, TrackedLayer
from indexer.engine.lowrank import compute_curvature, passes
from indexer.storage.store import MmapFactorStore


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d1", type=int, default=256)
    ap.add_argument("--d2", type=int, default=256)
    ap.add_argument("--c", type=int, default=1)
    ap.add_argument("--r", type=int, default=32)
    ap.add_argument("--p", type=int, default=10)
    ap.add_argument("--q", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    layout = FactorLayout((TrackedLayer("layer", args.d1, args.d2, args.d1, args.d2),), (args.c,))
    D = args.d1 * args.d2
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "factors.bin")
        mm = np.memmap(path, dtype=np.float16, mode="w+", shape=(args.n, layout.width))
        rng = np.random.default_rng(0)
        for s in range(0, args.n, 8192):
            rows = rng.standard_normal((min(8192, args.n - s), layout.width), dtype=np.float32)
            mm[s : s + len(rows)] = rows * np.linspace(1, 0.01, layout.width, dtype=np.float32)
        mm.flush()
        del mm
        store = MmapFactorStore(layout, path, 0, args.n, "fp16")
        cfg = CurvatureConfig(rank=args.r, oversample=args.p, power_iters=args.q)
        before = peak_rss()
        t = time.perf_counter()
        out = compute_curvature(store, cfg)
        seconds = time.perf_counter() - t
        after = peak_rss()
    k = args.r + args.p
    result = {
        "n": args.n,
        "D": D,
        "c": args.c,
        "r": args.r,
        "p": args.p,
        "q": args.q,
        "passes": passes(cfg),
        "seconds": round(seconds, 2),
        "peak_rss_bytes": after,
        "rss_growth_bytes": after - before,
        "G_bytes_fp32": args.n * D * 4,
        "GtG_bytes_fp32": D * D * 4,
        "working_set_bytes": D * k * 16,
        "sigma2_top": float(out["layer"].sigma2[0]),
    }
    if args.json:
        print(json.dumps(result))
        return
    gib = 2**30
    print(
        f"N={args.n} D={D} c={args.c} r={args.r} p={args.p} q={args.q} "
        f"({result['passes']} passes, {seconds:.1f} s)"
    )
    print(f"  G (N x D, fp32) would need   {result['G_bytes_fp32'] / gib:8.2f} GiB")
    print(f"  G^T G (D x D, fp32) needs     {result['GtG_bytes_fp32'] / gib:8.2f} GiB")
    print(f"  O(D(r+p)) accumulators       {result['working_set_bytes'] / gib:8.3f} GiB")
    print(
        f"  peak RSS of this process     {after / gib:8.3f} GiB "
        f"(growth during curvature {(after - before) / gib:.3f} GiB)"
    )


if __name__ == "__main__":
    main()
