"""LDS (linear datamodeling score, method.md section 5) and the baselines scored in our harness.

Ground truth: M random 50 % subsets S_m of the training set; the model is retrained on each
with several seeds and the per-query test losses are averaged over seeds -> losses (M, Q).
A method's scores tau (Q, N) predict, for query q and subset m, g_m(q) = sum_{i in S_m} tau(q,i).
Positive tau = the example lowers the query's loss, so the LDS of query q is the Spearman
correlation over m between g_m(q) and -loss_m(q). Reported: the mean over queries and a
bootstrap 95 % CI (queries resampled).

Baselines (same model, same data, same projections where they apply):
- LoGRA-dense: the full projected G~ per example and layer, exact (G^T G + lam I)^-1 per layer
  with lam = 0.1 trace(G^T G) / D.
- gradient dot: sum over layers of <G~_q, G~_i> (no preconditioner).
- TRAK-style: one checkpoint, the gradient of all parameters projected to k dims by a Gaussian
  JL matrix, phi_q (Phi^T Phi + lam I)^-1 phi_i (lam as above; no ensembling, no Q reweighting).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


@dataclass
class LDS:
    per_query: np.ndarray  # (Q,)
    mean: float
    ci_low: float
    ci_high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


def lds(
    scores: np.ndarray, subsets: np.ndarray, losses: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> LDS:
    """scores (Q, N), subsets (M, N) bool, losses (M, Q) -> LDS with a bootstrap 95 % CI."""
    predicted = subsets.astype(np.float64) @ scores.T.astype(np.float64)  # (M, Q)
    per_query = np.array([spearman(predicted[:, q], -losses[:, q]) for q in range(scores.shape[0])])
    rng = np.random.default_rng(seed)
    boots = per_query[rng.integers(0, len(per_query), (n_boot, len(per_query)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return LDS(per_query, float(per_query.mean()), float(lo), float(hi))


def random_subsets(m: int, n: int, frac: float = 0.5, seed: int = 0) -> np.ndarray:
    """(M, N) bool, each row exactly round(frac * N) examples."""
    rng = np.random.default_rng(seed)
    k = int(round(frac * n))
    out = np.zeros((m, n), dtype=bool)
    for row in out:
        row[rng.choice(n, k, replace=False)] = True
    return out


def save_ground_truth(out: Path, subsets: np.ndarray, losses: np.ndarray, config: dict) -> None:
    """subsets (M, N) bool (bit-packed), losses (M, seeds, Q) float32, config as JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        subsets=np.packbits(subsets, axis=1),
        n_train=subsets.shape[1],
        losses=losses,
        config=json.dumps(config),
    )


def retrain_losses(
    subsets: np.ndarray,
    seeds: Sequence[int],
    losses_of: Callable[[np.ndarray, int], np.ndarray],
    n_query: int,
    every: int,
) -> tuple[np.ndarray, float]:
    """Retrain on every subset with every seed: ``losses_of(indices, seed)`` trains on the
    training examples at ``indices`` and returns the (Q,) query losses. -> losses
    (M, len(seeds), Q) float32 and the seconds it took; progress every ``every`` subsets."""
    losses = np.zeros((len(subsets), len(seeds), n_query), dtype=np.float32)
    t = time.perf_counter()
    for i, s in enumerate(subsets):
        idx = np.flatnonzero(s)
        for k, seed in enumerate(seeds):
            losses[i, k] = losses_of(idx, seed)
        if (i + 1) % every == 0:
            print(f"  {i + 1}/{len(subsets)} subsets, {time.perf_counter() - t:.0f} s", flush=True)
    return losses, time.perf_counter() - t


def make_ground_truth(
    out: Path,
    subsets: np.ndarray,
    seeds: int,
    losses_of: Callable[[np.ndarray, int], np.ndarray],
    n_query: int,
    config: dict,
    every: int,
) -> None:
    """Retrain on each subset with seeds 0..seeds-1 (``retrain_losses``) and save the ground
    truth; ``config`` gets ``retrain_seconds`` appended."""
    losses, seconds = retrain_losses(subsets, range(seeds), losses_of, n_query, every)
    config = {**config, "retrain_seconds": round(seconds, 1)}
    save_ground_truth(out, subsets, losses, config)
    m = len(subsets)
    print(f"ground truth: {out} ({m} subsets x {seeds} seeds, {config['retrain_seconds']} s)")


def read_ground_truth(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """-> subsets (M, N) bool, losses averaged over seeds (M, Q), config."""
    z = np.load(path)
    subsets = np.unpackbits(z["subsets"], axis=1, count=int(z["n_train"])).astype(bool)
    return subsets, z["losses"].mean(axis=1), json.loads(str(z["config"]))


def seed_agreement(path: Path) -> float:
    """Mean per-query Spearman between the subset losses of two disjoint halves of the seeds:
    how well the ground truth agrees with itself (a ceiling for any method's LDS)."""
    raw = np.load(path)["losses"]  # (M, seeds, Q)
    half = raw.shape[1] // 2
    if half == 0:
        raise ValueError("seed agreement needs at least two seeds per subset")
    a, b = raw[:, :half].mean(axis=1), raw[:, half : 2 * half].mean(axis=1)
    return float(np.mean([spearman(a[:, q], b[:, q]) for q in range(raw.shape[2])]))


@dataclass
class Report:
    """Scores methods against one ground truth; prints a line and keeps a row per method."""

    subsets: np.ndarray
    losses: np.ndarray
    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)

    def add(
        self, method: str, config: str, scores: np.ndarray, nbytes: int | None, seconds: float
    ) -> None:
        """``nbytes`` None: the method stores nothing per example (it recomputes gradients)."""
        r = lds(scores, self.subsets, self.losses)
        self.rows.append(
            {
                "method": method,
                "config": config,
                "bytes_per_example": None if nbytes is None else int(nbytes),
                "lds": r.mean,
                "ci": [r.ci_low, r.ci_high],
                "seconds": round(seconds, 2),
            }
        )
        stored = "     none" if nbytes is None else f"{int(nbytes):9d}"
        print(
            f"  {method:12s} {config:18s} {stored} B/example  LDS {r}  ({seconds:.1f} s)",
            flush=True,
        )


def stacked_gradients(featurizer, examples: list, batch: int) -> dict[str, torch.Tensor]:
    """Projected G~ of every example (the same projections LoRIF uses): name -> (N, d1, d2)."""
    parts: dict[str, list] = {}
    for s in range(0, len(examples), batch):
        for name, g in featurizer.gradients(examples[s : s + batch]).items():
            parts.setdefault(name, []).append(g)
    return {n: torch.cat(v) for n, v in parts.items()}


def damping(gram: torch.Tensor, factor: float = 0.1) -> float:
    """lam = factor * trace(G^T G) / D."""
    return float(factor * torch.trace(gram) / gram.shape[0])


def logra_dense_scores(
    train: dict[str, torch.Tensor], query: dict[str, torch.Tensor], factor: float = 0.1
) -> np.ndarray:
    """train[name] (N, d1, d2), query[name] (Q, d1, d2) projected gradients -> scores (Q, N)."""
    total = None
    for name, g in train.items():
        G = g.reshape(g.shape[0], -1).double()
        Gq = query[name].reshape(query[name].shape[0], -1).double()
        n, d = G.shape
        if d <= n:
            gram = G.T @ G
            H = gram + damping(gram, factor) * torch.eye(d, dtype=gram.dtype)
            s = Gq @ torch.linalg.solve(H, G.T)
        else:  # the N x N kernel: (G^T G + lam I)^-1 G^T = G^T (G G^T + lam I)^-1
            kernel = G @ G.T
            lam = factor * float(torch.trace(kernel)) / d  # trace(G G^T) = trace(G^T G)
            s = torch.linalg.solve(kernel + lam * torch.eye(n, dtype=G.dtype), G @ Gq.T).T
        total = s if total is None else total + s
    return total.numpy()


def grad_dot_scores(train: dict[str, torch.Tensor], query: dict[str, torch.Tensor]) -> np.ndarray:
    total = None
    for name, g in train.items():
        s = (
            query[name].reshape(query[name].shape[0], -1).double()
            @ g.reshape(g.shape[0], -1).double().T
        )
        total = s if total is None else total + s
    return total.numpy()


def trak_scores(
    phi_train: torch.Tensor, phi_query: torch.Tensor, factor: float = 0.1
) -> np.ndarray:
    """phi (N, k) and (Q, k) JL-projected full gradients -> scores (Q, N)."""
    P, Pq = phi_train.double(), phi_query.double()
    gram = P.T @ P
    H = gram + damping(gram, factor) * torch.eye(gram.shape[0], dtype=gram.dtype)
    return (Pq @ torch.linalg.solve(H, P.T)).numpy()


def full_gradients(model: torch.nn.Module, loss_fn, batches) -> torch.Tensor:
    """Per-example gradients of all parameters, flattened: (N, P). ``loss_fn(params, batch)``
    returns per-example losses (B,); ``batches`` yields batches in example order."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, *example):
        batch = tuple(x.unsqueeze(0) for x in example)
        return loss_fn(lambda *a: functional_call(model, p, a), *batch).sum()

    out = []
    for batch in batches:
        g = vmap(grad(one), in_dims=(None, *([0] * len(batch))))(params, *batch)
        out.append(torch.cat([g[k].reshape(batch[0].shape[0], -1) for k in params], dim=1))
    return torch.cat(out)


def jl_project(g: torch.Tensor, k: int, seed: int = 0, block: int = 4096) -> torch.Tensor:
    """(N, P) -> (N, k) with a Gaussian N(0, 1/k) matrix generated in column blocks."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(g.shape[0], k, dtype=torch.float64)
    for start in range(0, g.shape[1], block):
        stop = min(start + block, g.shape[1])
        proj = torch.randn(stop - start, k, generator=gen, dtype=torch.float64) / k**0.5
        out += g[:, start:stop].double() @ proj
    return out
