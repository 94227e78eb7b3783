"""Per-layer curvature H = G^T G by a randomized truncated SVD streamed over stored factors.

G (N x D) has rows vec(L_i R_i^T); products with G and G^T are computed block by block, either
from the factors directly or from a rebuilt (B x D) block, whichever intermediate is smaller.
G and G^T G are never formed. Per layer (k = min(r + p, D)):
    Q = orth(G^T G Omega),  q times: Q = orth(G^T G Q),  B = (G Q)^T (G Q),  eigh(B) -> sigma^2, V.
Each product with G^T G is one pass over the factors; all layers of a group share the passes.
Accumulators are float64 (GEMMs run in float32), so peak memory per layer is O(D k).
Damping: lambda = alpha * mean(sigma^2[:k]) or an absolute value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import ConfigError
from .store import FactorStore
from .streaming import iter_blocks

Progress = Callable[[int], None]  # called with the number of rows just processed


@dataclass
class CurvatureConfig:
    rank: int = 128
    oversample: int = 10
    power_iters: int = 3
    damping: float = 0.1
    damping_abs: float = 0.0
    seed: int = 0
    memory_budget: int = 2 << 30  # bytes of accumulators per group of layers
    block_bytes: int = 64 << 20  # bytes of one block's largest intermediate (float32)


def passes(cfg: CurvatureConfig) -> int:
    """Passes over the factors per layer group."""
    return cfg.power_iters + 2


def _orth(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(x).Q


def _layer_groups(dims: list[int], ks: list[int], budget: int) -> list[list[int]]:
    groups: list[list[int]] = [[]]
    used = 0
    for i, (d, k) in enumerate(zip(dims, ks)):
        need = d * k * 16  # Q and accumulator, float64
        if groups[-1] and used + need > budget:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += need
    return groups


def _g_times(left: torch.Tensor, right: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """G_b Q without forming G_b: L^T (B, c, d1), R^T (B, c, d2), Q (D, k) -> (B, k).

    Row i is sum_c l_ic^T mat(Q_j) r_ic; one GEMM (B c, d1) x (d1, d2 k) does every (i, c, j).
    """
    b, c, d1 = left.shape
    d2, k = right.shape[2], q.shape[1]
    t = (left.reshape(b * c, d1) @ q.reshape(d1, d2 * k)).reshape(b, c, d2, k)
    return torch.einsum("bcdk,bcd->bk", t, right)


def _rebuild(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """L^T (B, c, d1), R^T (B, c, d2) -> G block (B, d1*d2), row-major vec of L R^T."""
    if left.shape[1] == 1:  # an outer product: broadcasting beats a K = 1 matmul
        return (left[:, 0, :, None] * right[:, 0, None, :]).reshape(left.shape[0], -1)
    return (left.transpose(1, 2) @ right).reshape(left.shape[0], -1)


def _rebuilds(d1: int, c: int, k: int) -> bool:
    """Rebuild the (B, D) block when it is no larger than the factored (B c, d2 k) intermediate:
    then both products are plain GEMMs on a smaller array (measured 6x faster at d1=32, k=266;
    5x slower at d1=256, k=20 - see benchmarks/bench_curvature_memory.py)."""
    return d1 <= c * k


def _gt_times(left: torch.Tensor, right: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """G_b^T Y without forming G_b: (D, k) = sum_i vec(L_i R_i^T) y_i^T, one GEMM."""
    b, c, d1 = left.shape
    d2, k = right.shape[2], y.shape[1]
    u = (right.unsqueeze(-1) * y[:, None, None, :]).reshape(b * c, d2 * k)
    return (left.reshape(b * c, d1).T @ u).reshape(d1 * d2, k)


def compute_curvature(store: FactorStore, cfg: CurvatureConfig,
                      device: torch.device | str = "cpu", progress: Progress | None = None
                      ) -> dict[str, dict[str, np.ndarray | float]]:
    """{layer: {"V": (D, r) float32, "sigma2": (r,) float64, "lambda": float}}."""
    layout = store.layout
    dims = [t.D for t in layout.layers]
    ks = [min(cfg.rank + cfg.oversample, d) for d in dims]
    if min(ks) == 0 and cfg.damping_abs <= 0:
        raise ConfigError("r + p = 0 leaves nothing to set lambda from; pass --damping-abs")
    rebuild = [_rebuilds(t.d1, layout.rank, k) for t, k in zip(layout.layers, ks)]
    widest = max((t.D if rb else layout.rank * t.d2 * k)
                 for t, k, rb in zip(layout.layers, ks, rebuild)) or 1
    block_rows = max(1, min(8192, cfg.block_bytes // (4 * widest)))
    out: dict[str, dict[str, np.ndarray | float]] = {}
    for group in _layer_groups(dims, ks, cfg.memory_budget):
        q = {}
        for i in group:  # Omega: Gaussian (D, k), seeded per layer
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
            q[i] = torch.randn(dims[i], ks[i], generator=gen, dtype=torch.float64).to(device)
        for step in range(passes(cfg)):
            last = step == passes(cfg) - 1
            acc = {i: torch.zeros((ks[i], ks[i]) if last else (dims[i], ks[i]),
                                  dtype=torch.float64, device=device) for i in group}
            q32 = {i: q[i].float() for i in group}
            for _, rows in iter_blocks(store, block_rows, device):
                for i in group:
                    left, right = layout.unpack(rows, i)
                    if rebuild[i]:
                        g = _rebuild(left, right)  # (B, D)
                        y = g @ q32[i]
                        acc[i] += (y.T @ y if last else g.T @ y).double()
                    else:
                        y = _g_times(left, right, q32[i])  # (B, k)
                        acc[i] += (y.T @ y if last else _gt_times(left, right, y)).double()
                if progress:
                    progress(rows.shape[0])
            if not last:
                q = {i: _orth(acc[i]) for i in group}
        for i in group:
            evals, evecs = torch.linalg.eigh(acc[i])  # ascending
            evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
            r = min(cfg.rank, dims[i])
            lam = cfg.damping_abs if cfg.damping_abs > 0 else cfg.damping * float(evals.mean())
            if lam <= 0:
                raise ConfigError(f"layer {layout.layers[i].name}: curvature is zero, lambda "
                                  "would be 0; pass --damping-abs")
            out[layout.layers[i].name] = {
                "V": (q[i] @ evecs[:, :r]).float().cpu().numpy(),
                "sigma2": evals[:r].cpu().numpy(),
                "lambda": lam,
            }
    return out


def woodbury_inverse(V: torch.Tensor, sigma2: torch.Tensor, lam: float) -> torch.Tensor:
    """Dense (V diag(sigma2) V^T + lam I)^{-1} = (1/lam)[I - V diag(sigma2/(sigma2+lam)) V^T].

    O(D^2): for tests and small layers only; the scorer applies the same form without building it.
    """
    coef = sigma2 / (sigma2 + lam)
    eye = torch.eye(V.shape[0], dtype=V.dtype, device=V.device)
    return (eye - (V * coef) @ V.T) / lam
