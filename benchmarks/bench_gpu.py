"""The GPU issue's table in one run: bandwidths; streamed and resident scans for Q = 1, 8, 32, 64
with the torch and the Triton kernel side by side; indexing against a plain forward+backward;
and what bf16 autocast does to the factors.

Rows are random bf16 factors in the layout of the quick demo index (the committed Shakespeare
Llama at f = 8, c = 1: 4,864 bytes per row), written to a file and memory-mapped (warm page
cache), so nothing needs the network. Needs only torch, numpy, h5py, transformers (the GPU
image's packages) and this checkout. On CPU it runs as a smoke test with small sizes.

    python -m benchmarks.bench_gpu [--rows 1230000] [--device-rows 10000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from indexer.engine.kernels import layer_groups
from indexer.engine.layout import FactorLayout
from indexer.engine.packed_scan import triton_importable
from indexer.engine.scoring import score_store
from indexer.storage.codec import encode_rows
from indexer.storage.resident import ResidentFactorStore
from indexer.storage.store import FactorStore, MmapFactorStore

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "shakespeare-llama"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    fn()  # warm-up (kernels, page cache)
    sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeat


def demo_layout() -> FactorLayout:
    from indexer.models.featurizer import Featurizer
    from indexer.models.loading import load_causal_lm
    from indexer.models.tasks import CausalLMTask

    loaded = load_causal_lm(str(MODEL))
    feat = Featurizer.create(loaded.model, CausalLMTask(loaded.tokenizer), proj_factor=8)
    return FactorLayout.uniform(tuple(feat.layers), 1)


def write_rows(path: Path, layout: FactorLayout, n: int) -> MmapFactorStore:
    """n random bf16 rows (scaled like factors), written in chunks."""
    gen = torch.Generator().manual_seed(0)
    with open(path, "wb") as f:
        for start in range(0, n, 65536):
            block = torch.randn(min(65536, n - start), layout.width, generator=gen) * 0.05
            f.write(encode_rows(block, "bf16").tobytes())
    return MmapFactorStore(layout, str(path), 0, n, "bf16")


def bandwidths(store: MmapFactorStore, device: torch.device) -> dict[str, float]:
    """GB/s: one-thread and 8-thread page-cache reads, pinned host->device, device copy."""
    raw = store.array
    nbytes = raw.nbytes
    out = np.empty_like(raw[: min(len(raw), 65536)])

    def read(threads: int) -> None:
        spans = [(s, min(s + len(out), len(raw))) for s in range(0, len(raw), len(out))]
        parts = np.array_split(np.arange(len(spans)), threads)

        def run(ix: np.ndarray) -> None:
            buf = np.empty_like(out)
            for i in ix:
                a, b = spans[i]
                np.copyto(buf[: b - a], raw[a:b])

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, parts))

    figures = {
        "page_cache_read_1_thread": nbytes / timed(lambda: read(1), device) / 1e9,
        "page_cache_read_8_threads": nbytes / timed(lambda: read(8), device) / 1e9,
    }
    size = min(nbytes, 2 << 30) // 4
    if device.type == "cuda":
        host = torch.empty(size, dtype=torch.float32, pin_memory=True)
        dev = torch.empty(size, dtype=torch.float32, device=device)
        figures["host_to_device_pinned"] = 4 * size / timed(lambda: dev.copy_(host), device) / 1e9
        other = torch.empty_like(dev)
        # a copy reads and writes every byte
        figures["device_copy"] = 8 * size / timed(lambda: other.copy_(dev), device, 5) / 1e9
    return figures


QUERIES = (1, 8, 32, 64)


def kernels(device: torch.device) -> list[str]:
    """The scan kernels to compare here: torch, and triton where it compiles (CUDA)."""
    return ["torch", "triton"] if device.type == "cuda" and triton_importable() else ["torch"]


def device_rows(layout: FactorLayout, n: int, device: torch.device) -> ResidentFactorStore:
    """``n`` random bf16 rows generated on the device, packed (nothing on disk or the host)."""
    gen = torch.Generator(device=device).manual_seed(2)
    packs = []
    for g in layer_groups(layout, str(device)):
        shape = (len(g.layers), n, g.c)
        left = torch.randn(*shape, g.d1, generator=gen, device=device).mul_(0.05).bfloat16()
        right = torch.randn(*shape, g.d2, generator=gen, device=device).mul_(0.05).bfloat16()
        packs.append((g, left, right))
    return ResidentFactorStore.of_packs(layout, "bf16", packs)


def scans(
    sources: dict[str, FactorStore], layout: FactorLayout, device: torch.device
) -> dict[str, float]:
    """Seconds of one scan for Q = 1, 8, 32, 64 batched queries, per source (streamed,
    resident) and kernel (torch, triton), side by side in this run."""
    gen = torch.Generator().manual_seed(1)
    most = max(QUERIES)
    p = {t.name: torch.randn(most, t.d1, t.d2, generator=gen).to(device) for t in layout.layers}
    out = {}
    for kernel in kernels(device):
        os.environ["LORIF_KERNEL"] = kernel
        for mode, source in sources.items():
            for q in QUERIES:
                batch = {n: t[:q] for n, t in p.items()}
                out[f"{mode}_{kernel}_{q}"] = timed(
                    lambda source=source, batch=batch: score_store(
                        source, batch, k=10, keep_scores=False, device=device
                    ),
                    device,
                )
    os.environ.pop("LORIF_KERNEL", None)
    return out


def scan_report(result: dict, gb: dict[str, float]) -> None:
    """Every scan's time and GB/s, and Q batched / 1 per source and kernel."""
    s, copy = result["scan_s"], result["bandwidth_gb_s"].get("device_copy")
    for key, v in s.items():
        mode = key.split("_")[0]
        rate = gb[mode] / v
        of_copy = (
            f"  {100 * rate / copy:5.1f} % of device copy" if copy and mode != "streamed" else ""
        )
        print(f"scan {key:24s} {v:8.4f} s  {rate:8.1f} GB/s{of_copy}")
    for key in [k for k in s if k.endswith("_1")]:
        base = key[: -len("_1")]
        ratios = ", ".join(f"{q}: {s[f'{base}_{q}'] / s[key]:.2f}x" for q in QUERIES[1:])
        print(f"{base}: batched / 1 query = {ratios}")


def indexing(device: torch.device, n: int, autocast: str, size: str = "demo") -> dict:
    """Build / plain forward+backward of the same batches: the demo model, or a random-init
    Llama of 1.0B parameters (hidden 2048, 20 blocks; f = 16, batch 16) built on the spot."""
    from benchmarks.bench_indexing import measure

    big = size == "1b"
    args = argparse.Namespace(
        model="" if big else str(MODEL), data="", n=n, batch_size=16 if big else 32,
        max_tokens=256, proj_factor=16 if big else 8, rank=1, curvature_rank=64,
        device=str(device), autocast=autocast, hidden=2048, layers=20, heads=16,
    )  # fmt: skip
    return measure(args)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (no ties in continuous scores; numpy only: the GPU image has no scipy)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def autocast_effect(device: torch.device, n: int, queries: int = 8) -> dict[str, float]:
    """Factors of the same ``n`` examples with and without bf16 autocast: relative error of
    L R^T per example, and the scores of ``queries`` queries (Spearman, top-10 overlap)."""
    from benchmarks.bench_indexing import synthetic
    from indexer import Example
    from indexer.engine.factorize import factorize_layers
    from indexer.models.featurizer import Featurizer
    from indexer.models.loading import load_causal_lm
    from indexer.models.tasks import CausalLMTask

    loaded = load_causal_lm(str(MODEL), device)
    feat = Featurizer.create(
        loaded.model, CausalLMTask(loaded.tokenizer, 256), proj_factor=8, device=device
    )
    texts = [Example(completion=t) for t in synthetic(n + queries, seed=3)]
    dense = {}
    for mode in (None, torch.bfloat16):
        feat.autocast = mode
        grads = {k: [] for k in feat.modules}
        for s in range(0, len(texts), 16):
            for k, g in feat.gradients(texts[s : s + 16]).items():
                grads[k].append(g)
        dense[mode] = {k: torch.cat(v) for k, v in grads.items()}
    errs, s32, s16 = [], [], []
    for k, g in dense[None].items():
        h = dense[torch.bfloat16][k]
        (l32, r32), (l16, r16) = (factorize_layers({k: x[:n]}, 1)[k] for x in (g, h))
        p32, p16 = l32 @ r32.mT, l16 @ r16.mT
        errs.append(((p16 - p32).flatten(1).norm(dim=1) / p32.flatten(1).norm(dim=1)).cpu())
        s32.append(torch.einsum("nij,qij->qn", p32, g[n:]).cpu())
        s16.append(torch.einsum("nij,qij->qn", p16, g[n:]).cpu())
    err = torch.cat(errs)
    a, b = sum(s32).numpy(), sum(s16).numpy()
    rho = [spearman(a[q], b[q]) for q in range(a.shape[0])]
    top10 = min(10, n)
    top = [
        len(set(np.argsort(-a[q])[:top10]) & set(np.argsort(-b[q])[:top10])) / top10
        for q in range(queries)
    ]
    return {
        "factor_rel_error_median": float(err.median()),
        "factor_rel_error_max": float(err.max()),
        "score_spearman_min": float(min(rho)),
        "top10_overlap_mean": float(np.mean(top)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=0, help="0 = 1.23 M on CUDA, 50 k on CPU")
    ap.add_argument(
        "--device-rows",
        type=int,
        default=0,
        help="also scan this many rows generated on the device, packed (e.g. 10000000 on an "
        "H200: 48.6 GB); 0 = none",
    )
    ap.add_argument("--examples", type=int, default=0, help="0 = 384 on CUDA, 64 on CPU")
    ap.add_argument(
        "--autocast-examples",
        type=int,
        default=0,
        help="examples (and at most 8 queries) of the bf16 comparison; 0 = min(examples, 256)",
    )
    ap.add_argument(
        "--build-model",
        choices=("demo", "1b"),
        default=None,
        help="the model of the build figures: demo (CPU default) or 1b (a random-init 1.0B "
        "Llama; CUDA default)",
    )
    ap.add_argument(
        "--serve-examples",
        type=int,
        default=-1,
        help="rows of the index `lorif serve` answers from (-1 = 2000 on CUDA, 64 on CPU; 0 = "
        "skip the serve figures)",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    rows, n_ex = (
        args.rows or (1_230_000 if cuda else 50_000),
        args.examples or (384 if cuda else 64),
    )
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"device: {name}; torch {torch.__version__}; {rows:,} rows; {n_ex} examples", flush=True)
    layout = demo_layout()
    result: dict = {"device": name, "rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        store = write_rows(Path(tmp) / "rows.bin", layout, rows)
        gb = len(store) * store.row_bytes / 1e9
        result["stored_gb"] = gb
        result["bandwidth_gb_s"] = bandwidths(store, device)
        print(json.dumps(result["bandwidth_gb_s"], indent=1), flush=True)
        sources: dict[str, FactorStore] = {"streamed": store}
        try:
            sources["resident"] = ResidentFactorStore(store, device)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # does not fit: report it
            print(f"resident: {e}")
        sizes = {"streamed": gb, "resident": gb}
        if args.device_rows:
            sources["generated"] = device_rows(layout, args.device_rows, device)
            sizes["generated"] = args.device_rows * store.row_bytes / 1e9
        result["scan_s"] = scans(sources, layout, device)
        del sources
        scan_report(result, sizes)
    size = args.build_model or ("1b" if cuda else "demo")
    for mode in ("none", "bf16") if cuda else ("none",):
        r = indexing(device, n_ex, mode, size)
        result[f"indexing_{mode}"] = r
        build, plain = r["build_seconds_excl_load"], r["plain_seconds"]
        ratio = r["ratio_build_over_plain"]
        print(
            f"indexing ({size}, {r['model_params'] / 1e6:.0f}M parameters, {r['n']} examples), "
            f"autocast {mode}: build {build} s, fwd+bwd {plain} s, ratio {ratio}"
        )
    n_auto = args.autocast_examples or min(n_ex, 256)
    result["autocast_effect"] = autocast_effect(device, n_auto, min(8, n_auto))
    print("bf16 autocast vs fp32 factors:", json.dumps(result["autocast_effect"]), flush=True)
    n_serve = args.serve_examples if args.serve_examples >= 0 else (2000 if cuda else 64)
    if n_serve:
        from benchmarks.gpu_serve import serve_figures

        result["serve"] = serve_figures(device, n_serve)
        print("lorif serve:", json.dumps(result["serve"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
