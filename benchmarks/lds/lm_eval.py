"""The LDS evaluation of a language-model setting (B, C): LoRIF's grid through the product's
build and scan, and the dense baselines on the same model and projections.

    python -m benchmarks.lds.shakespeare evaluate      # setting B
    python -m benchmarks.lds.milton evaluate           # setting C
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from .harness import (
    Report,
    grad_dot_scores,
    jl_project,
    logra_dense_scores,
    read_ground_truth,
    stacked_gradients,
    trak_scores,
)
from .lm import LMSetting

# (f, c, r); the f = 1 rows were added after the first run on B, to see whether projection
# (f = 4) or the curvature explains kronfluence's lead (it uses unprojected gradients).
GRID = [
    (4, 1, 256),
    (4, 4, 256),
    (4, 8, 256),
    (4, 1, 64),
    (8, 1, 128),
    (8, 4, 128),
    (2, 1, 256),
    (1, 1, 256),
    (1, 4, 256),
]


def evaluate(setting: LMSetting, gt: Path, json_out: Path | None, grid=GRID) -> list[dict]:
    """Score LoRIF (``grid``: (f, c, r)), LoGRA-dense, grad-dot and TRAK-style against the
    ground truth ``gt``; the rows as ``Report`` keeps them."""
    from indexer.build import build_index
    from indexer.config import BuildConfig, CurvatureConfig
    from indexer.models.featurizer import Featurizer
    from indexer.query import QueryEngine
    from indexer.storage.reader import Index

    subsets, losses, config = read_ground_truth(gt)
    model, task, train_ex, query_ex = setting.trained()
    report = Report(subsets, losses)
    add = report.add

    with tempfile.TemporaryDirectory() as tmp:
        for f, c, r in grid:
            feat = Featurizer.create(model, task, proj_factor=f, seed=0)
            cfg = BuildConfig(
                model=setting.name,
                data="memory",
                proj_factor=f,
                rank=c,
                curvature=CurvatureConfig(rank=r),
                seed=0,
                batch_size=32,
                overwrite=True,
                output=str(Path(tmp) / f"f{f}c{c}r{r}.h5"),
                max_tokens=setting.max_tokens,
            )
            t = time.perf_counter()
            build_index(
                cfg,
                featurizer=feat,
                examples=train_ex,
                progress=False,
                model_info={"name": setting.name},
                task_info={"kind": "lm"},
            )
            build_s = time.perf_counter() - t
            with Index(cfg.output) as index:
                scores = (
                    QueryEngine.attach(index, model, task)
                    .score(query_ex, k=1, keep_scores=True)
                    .scores
                )
                add("LoRIF", f"f={f} c={c} r={r}", scores, index.bytes_per_example()[0], build_s)
    for f in (1, 4, 8):
        t = time.perf_counter()
        feat = Featurizer.create(model, task, proj_factor=f, seed=0)
        g_train = stacked_gradients(feat, train_ex, 32)
        g_query = stacked_gradients(feat, query_ex, 32)
        numbers = sum(g[0].numel() for g in g_train.values())
        add(
            "LoGRA-dense",
            f"f={f}",
            logra_dense_scores(g_train, g_query),
            2 * numbers,
            time.perf_counter() - t,
        )
        if f in (1, 4):
            add("grad-dot", f"f={f}", grad_dot_scores(g_train, g_query), 2 * numbers, 0.0)
        if f == 4:
            for factor in (0.01, 1.0):
                add(
                    "LoGRA-dense",
                    f"f={f} lam x{factor:g}",
                    logra_dense_scores(g_train, g_query, factor),
                    2 * numbers,
                    0.0,
                )
    t = time.perf_counter()
    full, full_q = _full(model, task, train_ex), _full(model, task, query_ex)
    for k in (1024, 4096):
        add(
            "TRAK-style",
            f"k={k}",
            trak_scores(jl_project(full, k), jl_project(full_q, k)),
            2 * k,
            time.perf_counter() - t,
        )
    print(f"ground truth: {config['m']} subsets x {config['seeds']} seeds, {len(query_ex)} queries")
    if json_out:
        json_out.write_text(json.dumps(report.rows, indent=2))
    return report.rows


def _full(model, task, examples) -> torch.Tensor:
    """Per-example gradients of all parameters (one backward per example), (N, P)."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    out = []
    for ex in examples:
        loss = task.loss(model, task.collate([ex])).sum()
        grads = torch.autograd.grad(loss, params)
        out.append(torch.cat([g.reshape(-1) for g in grads]))
    for p in params:
        p.requires_grad_(False)
    return torch.stack(out)


def main(setting: LMSetting, description: str) -> None:
    """The setting's command line: ground-truth, add-seeds, evaluate."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("command", choices=["ground-truth", "add-seeds", "evaluate"])
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per subset (add-seeds: extra)")
    ap.add_argument("--ground-truth", type=Path, default=setting.ground_truth)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.command == "ground-truth":
        setting.make_ground_truth(args.m, args.seeds, args.ground_truth)
    elif args.command == "add-seeds":
        setting.add_seeds(args.ground_truth, args.seeds)
    else:
        evaluate(setting, args.ground_truth, args.json)
