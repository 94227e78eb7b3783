"""Independent reference computations (plain autograd + dense linear algebra) for the tests."""

from __future__ import annotations

import numpy as np
import torch

from indexer.engine.capture import Conv1D


def autograd_projected(model, task, featurizer, example) -> dict[str, torch.Tensor]:
    """P_in^T (dL/dW)^T P_out per tracked layer, from autograd on this example alone (no
    padding, full weight gradients), using the featurizer's projection matrices."""
    model.zero_grad()
    task.loss(model, task.collate([example])).sum().backward()
    out = {}
    for name, module in featurizer.modules.items():
        grad = module.weight.grad
        grad_in_out = grad if isinstance(module, Conv1D) else grad.T  # (in, out)
        p_in, p_out = (torch.from_numpy(np.asarray(m)) for m in featurizer.projections[name])
        out[name] = p_in.T @ grad_in_out @ p_out
    model.zero_grad()
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def dense_influence(
    model, task, featurizer, train, queries, lambdas: dict[str, float], ranks=None
) -> np.ndarray:
    """s(q, i) = sum_layers g_q^T (G^T G + lambda I)^{-1} g_i in float64, (Q, N); ``ranks``
    ({layer: c}): each training gradient first truncated to its best rank c (by SVD)."""
    g_train = [autograd_projected(model, task, featurizer, ex) for ex in train]
    if ranks is not None:
        g_train = [{n: _truncated(g, ranks[n]) for n, g in gs.items()} for gs in g_train]
    g_query = [autograd_projected(model, task, featurizer, ex) for ex in queries]
    total = np.zeros((len(queries), len(train)))
    for name in featurizer.modules:
        G = np.stack([g[name].double().flatten().numpy() for g in g_train])  # (N, D)
        Gq = np.stack([g[name].double().flatten().numpy() for g in g_query])  # (Q, D)
        H = G.T @ G + lambdas[name] * np.eye(G.shape[1])
        total += Gq @ np.linalg.solve(H, G.T)
    return total


def _truncated(g: torch.Tensor, c: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
    return (u[:, :c] * s[:c]) @ vh[:c]


def woodbury_inverse(V: torch.Tensor, sigma2: torch.Tensor, lam: float) -> torch.Tensor:
    """Dense (V diag(sigma2) V^T + lam I)^{-1} = (1/lam)[I - V diag(sigma2/(sigma2+lam)) V^T],
    O(D^2); the scorer applies the same form without building it."""
    coef = sigma2 / (sigma2 + lam)
    eye = torch.eye(V.shape[0], dtype=V.dtype, device=V.device)
    return (eye - (V * coef) @ V.T) / lam
