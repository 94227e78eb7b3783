"""LDS setting A: scikit-learn's digits (8x8 images, 10 classes) with a small MLP.

    python -m benchmarks.lds.digits ground-truth   # retrain M subsets x S seeds (once; committed)
    python -m benchmarks.lds.digits evaluate          # score every method against it
    python -m benchmarks.lds.digits evaluate --smoke  # CI: tiny ground truth, two methods

Data: 1,797 images scaled to [0, 1]; a fixed permutation gives N = 1,000 training examples and
Q = 100 test queries. Model: 64 -> 128 (ReLU) -> 10, full-batch Adam, 300 steps, L2 1e-3 (the
field's MNIST-MLP setting, scaled to what ships offline). Ground truth: M = 100 random halves,
3 seeds each (the seed sets the initialisation); the per-query test losses are averaged.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import harness
from .harness import (
    Report,
    grad_dot_scores,
    jl_project,
    logra_dense_scores,
    random_subsets,
    read_ground_truth,
    stacked_gradients,
    trak_scores,
)

HERE = Path(__file__).resolve().parent
GROUND_TRUTH = HERE / "data" / "digits_ground_truth.npz"
N_TRAIN, N_QUERY = 1000, 100
STEPS, LR, L2 = 300, 1e-2, 1e-3


def load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN : N_TRAIN + N_QUERY]
    return x[tr], y[tr], x[te], y[te]


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def train(x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = STEPS) -> nn.Module:
    """Full-batch Adam: deterministic given (data, seed)."""
    model = make_model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss = loss + L2 * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        opt.step()
    return model


def query_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y, reduction="none").numpy()


def make_ground_truth(m: int, seeds: int, out: Path, steps: int = STEPS) -> None:
    torch.set_num_threads(1)  # many tiny full-batch runs: one thread each is fastest here
    x, y, xq, yq = load()

    def losses_of(idx: np.ndarray, seed: int) -> np.ndarray:
        sub = torch.from_numpy(idx)
        return query_losses(train(x[sub], y[sub], seed, steps), xq, yq)

    config = {
        "setting": "digits-mlp",
        "n_train": N_TRAIN,
        "n_query": N_QUERY,
        "m": m,
        "seeds": seeds,
        "steps": steps,
        "lr": LR,
        "l2": L2,
        "subset_seed": 1,
    }
    subsets = random_subsets(m, len(y), seed=1)
    harness.make_ground_truth(out, subsets, seeds, losses_of, len(yq), config, every=10)


def lorif_scores(
    model, x, y, xq, yq, f: int, c: int, r: int, tmp: Path
) -> tuple[np.ndarray, int, float]:
    """LoRIF through the Python API: build an index of the training set, score the queries."""
    from indexer.build import build_index
    from indexer.config import BuildConfig, CurvatureConfig
    from indexer.data import Example
    from indexer.models.featurizer import Featurizer
    from indexer.models.tasks import ClassificationTask
    from indexer.query import QueryEngine
    from indexer.storage.reader import Index

    task = ClassificationTask()
    feat = Featurizer.create(model, task, proj_factor=f, seed=0)
    train_ex = [
        Example(completion=f"train {i}", inputs=x[i], meta={"label": int(y[i])})
        for i in range(len(y))
    ]
    queries = [
        Example(completion=f"query {i}", inputs=xq[i], meta={"label": int(yq[i])})
        for i in range(len(yq))
    ]
    out = tmp / f"digits-f{f}-c{c}-r{r}.h5"
    cfg = BuildConfig(
        model="digits-mlp",
        data="memory",
        output=str(out),
        proj_factor=f,
        rank=c,
        curvature=CurvatureConfig(rank=r),
        seed=0,
        batch_size=250,
        overwrite=True,
    )
    t = time.perf_counter()
    build_index(
        cfg,
        featurizer=feat,
        examples=train_ex,
        model_info={"name": "digits-mlp"},
        task_info={"kind": "classification"},
        progress=False,
    )
    build_s = time.perf_counter() - t
    with Index(out) as index:
        engine = QueryEngine.attach(index, model, task)
        scores = engine.score(queries, k=1, keep_scores=True).scores
        per_example = index.bytes_per_example()[0]
    return scores, per_example, build_s


def projected(model, x, y, f: int, seed: int = 0) -> tuple[dict, int]:
    """G~ of every example with the same projections LoRIF uses (same f, same seed)."""
    from indexer.data import Example
    from indexer.models.featurizer import Featurizer
    from indexer.models.tasks import ClassificationTask

    feat = Featurizer.create(model, ClassificationTask(), proj_factor=f, seed=seed)
    ex = [Example(completion="", inputs=x[i], meta={"label": int(y[i])}) for i in range(len(y))]
    out = stacked_gradients(feat, ex, 250)
    return out, sum(g[0].numel() for g in out.values())


def evaluate(gt: Path, smoke: bool) -> list[dict]:
    subsets, losses, config = read_ground_truth(gt)
    x, y, xq, yq = load()
    model = train(x, y, seed=0)
    report = Report(subsets, losses)
    add = report.add

    grid = (
        [(1, 1, 64)]
        if smoke
        else [
            (1, 1, 256),
            (1, 2, 256),
            (1, 4, 256),
            (1, 1, 64),
            (2, 1, 256),
            (2, 4, 256),
            (4, 1, 128),
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        for f, c, r in grid:
            scores, per_example, build_s = lorif_scores(model, x, y, xq, yq, f, c, r, Path(tmp))
            add("LoRIF", f"f={f} c={c} r={r}", scores, per_example, build_s)
    for f in [1] if smoke else [1, 2, 4]:
        t = time.perf_counter()
        g_train, numbers = projected(model, x, y, f)
        g_query, _ = projected(model, xq, yq, f)
        add(
            "LoGRA-dense",
            f"f={f}",
            logra_dense_scores(g_train, g_query),
            2 * numbers,
            time.perf_counter() - t,
        )
        if f == 1:
            add("grad-dot", f"f={f}", grad_dot_scores(g_train, g_query), 2 * numbers, 0.0)
            for factor in [] if smoke else [0.01, 1.0]:  # damping sensitivity, not the headline
                add(
                    "LoGRA-dense",
                    f"f={f} lam x{factor:g}",
                    logra_dense_scores(g_train, g_query, factor),
                    2 * numbers,
                    0.0,
                )
    if not smoke:
        from .harness import full_gradients

        def loss_fn(fwd, xb, yb):
            return nn.functional.cross_entropy(fwd(xb), yb, reduction="none")

        t = time.perf_counter()
        full = full_gradients(
            model, loss_fn, [(x[s : s + 250], y[s : s + 250]) for s in range(0, len(y), 250)]
        )
        full_q = full_gradients(model, loss_fn, [(xq, yq)])
        for k in (512, 2048):
            add(
                "TRAK-style",
                f"k={k}",
                trak_scores(jl_project(full, k), jl_project(full_q, k)),
                2 * k,
                time.perf_counter() - t,
            )
    print(f"ground truth: {config['m']} subsets x {config['seeds']} seeds, {len(yq)} queries")
    return report.rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["ground-truth", "evaluate"])
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny ground truth and two methods")
    ap.add_argument("--ground-truth", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.command == "ground-truth":
        make_ground_truth(args.m, args.seeds, args.ground_truth or GROUND_TRUTH)
        return
    gt = args.ground_truth or GROUND_TRUTH
    if args.smoke and args.ground_truth is None:
        gt = Path(tempfile.mkdtemp()) / "smoke.npz"
        make_ground_truth(8, 1, gt, steps=100)
    rows = evaluate(gt, args.smoke)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
