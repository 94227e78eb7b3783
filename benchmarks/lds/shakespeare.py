"""LDS setting B: a small Llama-architecture LM on a Shakespeare subset.

    python -m benchmarks.lds.shakespeare ground-truth   # retrain M subsets x S seeds (committed)
    python -m benchmarks.lds.shakespeare evaluate       # score every method against it

Data: N = 1,000 training speeches (80-400 characters, the corpus' train split, every k-th) and
Q = 50 held-out speeches (val split) as queries. Tokenizer: byte-level BPE (1,024) fitted on
the N training speeches. Model: Llama, hidden 64, 2 layers, 4 heads, tied embeddings; AdamW,
batch 32, 4 epochs over the (sub)set. Query loss = summed next-token loss of the speech.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import harness
from .harness import (
    Report,
    grad_dot_scores,
    jl_project,
    logra_dense_scores,
    random_subsets,
    read_ground_truth,
    retrain_losses,
    save_ground_truth,
    stacked_gradients,
    trak_scores,
)

HERE = Path(__file__).resolve().parent
GROUND_TRUTH = HERE / "data" / "shakespeare_ground_truth.npz"
N_TRAIN, N_QUERY, MAX_TOKENS = 1000, 50, 96
EPOCHS, BATCH, LR = 4, 32, 3e-3


def load() -> tuple[list[str], list[str]]:
    from lorif_demo.corpora.shakespeare import load_speeches
    from lorif_demo.corpora.splits import split_of

    speeches = load_speeches(version=1)  # the committed ground truth was built from it
    ok = [(i, r["text"]) for i, r in enumerate(speeches) if 80 <= len(r["text"]) <= 400]
    train = [t for i, t in ok if split_of(i) == "train"]
    val = [t for i, t in ok if split_of(i) != "train"]
    return train[:: len(train) // N_TRAIN][:N_TRAIN], val[:: len(val) // N_QUERY][:N_QUERY]


def task_for(train_texts: list[str]):
    from indexer.models.tasks import CausalLMTask
    from lorif_demo.toy import train_tokenizer

    return CausalLMTask(train_tokenizer(train_texts, vocab_size=1024), MAX_TOKENS)


def make_model(vocab: int, seed: int) -> torch.nn.Module:
    from lorif_demo.toy import tiny_lm

    return tiny_lm("llama", vocab, hidden=64, layers=2, heads=4, seed=seed, tie_embeddings=True)


def train(task, texts: list[str], seed: int, epochs: int = EPOCHS) -> torch.nn.Module:
    """AdamW over shuffled minibatches; deterministic given (texts, seed)."""
    model = make_model(len(task.tokenizer), seed).train()
    fit(model, task, texts, seed, epochs)
    return model.eval()


def fit(
    model: torch.nn.Module,
    task,
    texts: list[str],
    seed: int,
    epochs: int,
    lr: float = LR,
    stop: Callable[[int], bool] | None = None,
) -> int:
    """Train ``model`` in place (AdamW, batch BATCH, shuffled per epoch with ``seed``) for
    ``epochs``, or until ``stop(epoch)`` says so; returns the epochs run."""
    from indexer.data import Example

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    examples = [Example(completion=t) for t in texts]
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(examples), generator=gen).tolist()
        for s in range(0, len(order), BATCH):
            batch = task.collate([examples[i] for i in order[s : s + BATCH]])
            losses = task.loss(model, batch)
            n_tokens = (batch["loss_mask"][:, 1:] & batch["attention_mask"][:, 1:].bool()).sum()
            opt.zero_grad()
            (losses.sum() / n_tokens).backward()
            opt.step()
        if stop is not None and stop(epoch):
            return epoch
    return epochs


@torch.no_grad()
def query_losses(model, task, texts: list[str]) -> np.ndarray:
    from indexer.data import Example

    return task.loss(model, task.collate([Example(completion=t) for t in texts])).numpy()


def make_ground_truth(m: int, seeds: int, out: Path) -> None:
    train_texts, query_texts = load()
    task = task_for(train_texts)
    config = {
        "setting": "shakespeare-llama-tiny",
        "n_train": len(train_texts),
        "n_query": len(query_texts),
        "m": m,
        "seeds": seeds,
        "epochs": EPOCHS,
        "batch": BATCH,
        "lr": LR,
        "max_tokens": MAX_TOKENS,
        "subset_seed": 1,
    }
    subsets = random_subsets(m, len(train_texts), seed=1)
    losses_of = _losses_of(task, train_texts, query_texts)
    harness.make_ground_truth(out, subsets, seeds, losses_of, len(query_texts), config, every=5)


def add_seeds(gt: Path, extra: int) -> None:
    """Retrain the committed subsets with ``extra`` more seeds and append their losses."""
    z = np.load(gt)
    subsets, _, config = read_ground_truth(gt)
    old = z["losses"]  # (M, seeds, Q)
    train_texts, query_texts = load()
    task = task_for(train_texts)
    seeds = range(old.shape[1], old.shape[1] + extra)
    losses_of = _losses_of(task, train_texts, query_texts)
    new, seconds = retrain_losses(subsets, seeds, losses_of, old.shape[2], every=5)
    config["seeds"] = old.shape[1] + extra
    config["retrain_seconds"] = round(config["retrain_seconds"] + seconds, 1)
    save_ground_truth(gt, subsets, np.concatenate([old, new], axis=1), config)
    print(f"ground truth: {gt} ({len(subsets)} subsets x {config['seeds']} seeds)")


def _losses_of(task, train_texts: list[str], query_texts: list[str]):
    """(indices of the training texts, seed) -> the query losses of a model trained on them."""

    def losses_of(idx: np.ndarray, seed: int) -> np.ndarray:
        return query_losses(train(task, [train_texts[j] for j in idx], seed), task, query_texts)

    return losses_of


def trained_setting():
    """The model trained on all N speeches (frozen), its task, and the train/query examples."""
    from indexer.data import Example

    train_texts, query_texts = load()
    task = task_for(train_texts)
    model = train(task, train_texts, seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    return (
        model,
        task,
        [Example(completion=t) for t in train_texts],
        [Example(completion=t) for t in query_texts],
    )


def evaluate(gt: Path, json_out: Path | None) -> list[dict]:
    from indexer.build import build_index
    from indexer.config import BuildConfig, CurvatureConfig
    from indexer.models.featurizer import Featurizer
    from indexer.query import QueryEngine
    from indexer.storage.reader import Index

    subsets, losses, config = read_ground_truth(gt)
    model, task, train_ex, query_ex = trained_setting()
    report = Report(subsets, losses)
    add = report.add

    with tempfile.TemporaryDirectory() as tmp:
        # f = 1 rows were added after the first run, to see whether projection (f = 4) or the
        # curvature explains kronfluence's lead (it uses unprojected gradients).
        for f, c, r in [
            (4, 1, 256),
            (4, 4, 256),
            (4, 8, 256),
            (4, 1, 64),
            (8, 1, 128),
            (8, 4, 128),
            (2, 1, 256),
            (1, 1, 256),
            (1, 4, 256),
        ]:
            feat = Featurizer.create(model, task, proj_factor=f, seed=0)
            cfg = BuildConfig(
                model="shakespeare-tiny",
                data="memory",
                proj_factor=f,
                rank=c,
                curvature=CurvatureConfig(rank=r),
                seed=0,
                batch_size=32,
                overwrite=True,
                output=str(Path(tmp) / f"f{f}c{c}r{r}.h5"),
                max_tokens=MAX_TOKENS,
            )
            t = time.perf_counter()
            build_index(
                cfg,
                featurizer=feat,
                examples=train_ex,
                progress=False,
                model_info={"name": "shakespeare-tiny"},
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["ground-truth", "add-seeds", "evaluate"])
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per subset (add-seeds: extra)")
    ap.add_argument("--ground-truth", type=Path, default=GROUND_TRUTH)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.command == "ground-truth":
        make_ground_truth(args.m, args.seeds, args.ground_truth)
    elif args.command == "add-seeds":
        add_seeds(args.ground_truth, args.seeds)
    else:
        evaluate(args.ground_truth, args.json)


if __name__ == "__main__":
    main()
