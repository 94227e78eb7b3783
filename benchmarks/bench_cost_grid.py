"""Cost grid: LoRIF over (f, c, r) against LoGRA-dense at the same projections (same D).

Same model (the demo's shakespeare-llama, 28 layers), same speeches, one run. For each
configuration: bytes per example, build time (featurize + store + curvature), and the scan
time of 1 and of 32 batched preconditioned queries over all N rows (query featurization is
the same for both methods and excluded). LoGRA-dense stores every example's projected G~
(D = d1*d2 numbers per layer, bf16), inverts G^T G + lam I exactly per layer (lam = 0.1 tr/D)
and scores with one GEMV/GEMM per layer over the dense rows.

    python benchmarks/bench_cost_grid.py [--n 500,2000] [--tile 10] [--json out.json]

``--tile T`` also times both scans at the largest N and f = 8 over the rows repeated T times
(N*T rows, written to disk and read through the page cache), to see the ratio at scale
without featurizing N*T speeches.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from indexer.build import build_index
from indexer.config import BuildConfig, CurvatureConfig
from indexer.data import Example
from indexer.engine.layout import FactorLayout, TrackedLayer
from indexer.engine.scoring import score_store
from indexer.models.featurizer import Featurizer
from indexer.models.loading import load_causal_lm
from indexer.models.tasks import CausalLMTask
from indexer.query import QueryEngine
from indexer.storage.codec import encode_rows
from indexer.storage.reader import Index
from indexer.storage.store import MemoryFactorStore, MmapFactorStore

BATCH = 32


def speeches(n: int, offset: int = 0) -> list[Example]:
    from lorif_demo.corpora.shakespeare import load_speeches

    records = load_speeches()
    return [
        Example(completion=r["text"], meta={"speaker": r["speaker"]})
        for r in records[offset::15][:n]
    ]


def timed(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def lorif(model, task, train, queries, f, c, r, tmp: Path, tile: int = 1) -> dict:
    feat = Featurizer.create(model, task, proj_factor=f, seed=0)
    cfg = BuildConfig(
        model="shakespeare-llama",
        data="memory",
        output=str(tmp / "l"),
        proj_factor=f,
        rank=c,
        curvature=CurvatureConfig(rank=r),
        batch_size=16,
        overwrite=True,
        max_tokens=task.max_tokens,
    )
    t = time.perf_counter()
    build_index(
        cfg,
        featurizer=feat,
        examples=train,
        progress=False,
        model_info={"name": "shakespeare-llama"},
        task_info={"kind": "lm"},
    )
    build_s = time.perf_counter() - t
    with Index(cfg.output) as index:
        engine = QueryEngine.attach(index, model, task)
        p = engine.preconditioned(queries)
        store = index.store()
        one = {k: v[:1] for k, v in p.items()}
        q1 = timed(lambda: score_store(store, one, k=10, keep_scores=False))
        q32 = timed(lambda: score_store(store, p, k=10, keep_scores=False))
        per = index.bytes_per_example()[0]
        out = {"bytes": per, "build_s": build_s, "query1_s": q1, "query32_s": q32}
        if tile > 1:  # the same rows repeated: a raw factor file of N * tile rows
            raw = np.ascontiguousarray(store.read(0, len(store)))
            path = tmp / "tiled.bin"
            with path.open("wb") as fh:
                for _ in range(tile):
                    fh.write(raw.tobytes())
            big = MmapFactorStore(store.layout, str(path), 0, len(store) * tile, store.dtype)
            out["tiled"] = {
                "n": len(big),
                "query1_s": timed(lambda: score_store(big, one, k=10, keep_scores=False)),
                "query32_s": timed(lambda: score_store(big, p, k=10, keep_scores=False)),
            }
    return out


def dense_layout(width: int) -> FactorLayout:
    """A layout whose row is ``width`` values: lets the dense rows go through LoRIF's reader."""
    return FactorLayout((TrackedLayer("dense", width, 1, width - 1, 1),), (1,))


def logra_dense(model, task, train, queries, f, tmp: Path, tile: int = 1) -> dict:
    feat = Featurizer.create(model, task, proj_factor=f, seed=0)
    names = [t.name for t in feat.layers]
    dims = [t.d1 * t.d2 for t in feat.layers]
    width = sum(dims)
    path = tmp / "dense.bin"
    t = time.perf_counter()
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(len(train), width))
    grams = {n: torch.zeros(d, d, dtype=torch.float64) for n, d in zip(names, dims, strict=False)}
    for s in range(0, len(train), 16):
        g = feat.gradients(train[s : s + 16])
        flat = torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1)
        rows[s : s + flat.shape[0]] = encode_rows(flat, "bf16")
        for n in names:
            gn = g[n].reshape(g[n].shape[0], -1).double()
            grams[n] += gn.T @ gn
    rows.flush()
    inverses = {}
    for n, gram in grams.items():  # exact damped inverse per layer
        lam = 0.1 * torch.trace(gram) / gram.shape[0]
        inverses[n] = torch.linalg.inv(
            gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype)
        ).float()
    build_s = time.perf_counter() - t
    gq = feat.gradients(queries)
    pq = torch.cat([gq[n].reshape(len(queries), -1) @ inverses[n] for n in names], dim=1)
    data = np.load(path, mmap_mode="r")

    def scan(p: torch.Tensor, block: int = 4096) -> None:
        # the same block reader (read-ahead thread, decode off the compute thread, reused
        # buffers) and block size as LoRIF's scan: only the arithmetic differs
        dense = MemoryFactorStore(dense_layout(width), data, "bf16")
        for _, x in dense.blocks(block):
            scores = x @ p.T  # (B, Q): all layers at once, the per-layer sums add up
            torch.topk(scores, min(10, scores.shape[0]), dim=0)

    q1 = timed(lambda: scan(pq[:1]))
    q32 = timed(lambda: scan(pq))
    out = {"bytes": 2 * width, "build_s": build_s, "query1_s": q1, "query32_s": q32}
    if tile > 1:
        big = np.lib.format.open_memmap(
            tmp / "dense-tiled.npy", mode="w+", dtype=np.uint16, shape=(data.shape[0] * tile, width)
        )
        for i in range(tile):
            big[i * data.shape[0] : (i + 1) * data.shape[0]] = data
        big.flush()
        data = np.load(tmp / "dense-tiled.npy", mmap_mode="r")
        out["tiled"] = {
            "n": data.shape[0],
            "query1_s": timed(lambda: scan(pq[:1])),
            "query32_s": timed(lambda: scan(pq)),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="500,2000")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument(
        "--tile",
        type=int,
        default=1,
        help="Also time the f=8 scans over the largest N's rows repeated this often.",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    loaded = load_causal_lm("shakespeare-llama", "cpu")
    task = CausalLMTask(loaded.tokenizer, args.max_tokens)
    queries = speeches(BATCH, offset=7)
    ns = [int(x) for x in args.n.split(",")]
    grid = {ns[-1]: [(8, 1, 256), (8, 4, 256), (16, 1, 128), (16, 4, 128)]}
    for n in ns[:-1]:
        grid[n] = [(8, 1, 256)]
    out = []
    print(
        f"model shakespeare-llama (28 layers), {torch.get_num_threads()} threads; scan = "
        f"preconditioned queries against all N rows, best of 2"
    )
    print(
        f"{'N':>6} {'method':12} {'config':16} {'B/example':>10} {'build s':>8} "
        f"{'1 query s':>10} {'32 queries s':>13}"
    )
    for n in sorted(grid):
        train = speeches(n)
        dense_done: dict[int, dict] = {}
        for f, c, r in grid[n]:
            tile = args.tile if (n == ns[-1] and (f, c) == (8, 1)) else 1
            with tempfile.TemporaryDirectory() as tmp:
                res = lorif(loaded.model, task, train, queries, f, c, r, Path(tmp), tile)
                if f not in dense_done:
                    dense_done[f] = logra_dense(
                        loaded.model, task, train, queries, f, Path(tmp), tile
                    )
            rows = [("LoRIF", f"f={f} c={c} r={r}", res)]
            if (f, c, r) == next(g for g in grid[n] if g[0] == f):
                rows.append(("LoGRA-dense", f"f={f}", dense_done[f]))
            for method, cfg, m in rows:
                print(
                    f"{n:6d} {method:12} {cfg:16} {m['bytes']:10d} {m['build_s']:8.1f} "
                    f"{m['query1_s']:10.3f} {m['query32_s']:13.3f}",
                    flush=True,
                )
                out.append({"n": n, "method": method, "config": cfg, **m})
    print("\nratios LoGRA-dense / LoRIF at the same f (c=1):")
    for item in out:
        if item["method"] != "LoGRA-dense":
            continue
        f = item["config"].split("=")[1]
        mine = [
            o
            for o in out
            if o["n"] == item["n"]
            and o["method"] == "LoRIF"
            and o["config"].startswith(f"f={f} c=1")
        ][0]
        print(
            f"  N={item['n']} f={f}: storage {item['bytes'] / mine['bytes']:.1f}x, build "
            f"{item['build_s'] / mine['build_s']:.2f}x, 1 query "
            f"{item['query1_s'] / mine['query1_s']:.2f}x, 32 queries "
            f"{item['query32_s'] / mine['query32_s']:.2f}x"
        )
    tiled = [o for o in out if "tiled" in o]
    if tiled:
        print(f"\nrows repeated {args.tile}x (same D, f=8; scans only):")
        for o in tiled:
            t = o["tiled"]
            print(
                f"  N={t['n']:7d} {o['method']:12} {o['config']:16} "
                f"{o['bytes'] * t['n'] / 1e9:6.2f} GB  1 query {t['query1_s']:7.3f} s  "
                f"32 queries {t['query32_s']:7.3f} s"
            )
        dense, mine = (
            next(o["tiled"] for o in tiled if o["method"] == m) for m in ("LoGRA-dense", "LoRIF")
        )
        print(
            f"  ratio LoGRA-dense / LoRIF: 1 query {dense['query1_s'] / mine['query1_s']:.2f}x, "
            f"32 queries {dense['query32_s'] / mine['query32_s']:.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
