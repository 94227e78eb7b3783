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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from ..errors import ConfigError
from .layout import RowSource

if TYPE_CHECKING:  # the settings are only read: no import of the config at run time
    from ..config import CurvatureConfig

Progress = Callable[[int], object]  # called with the number of rows just processed


@dataclass
class LayerCurvature:
    """One layer's basis: H ~= V diag(sigma2) V^T, damped by lam."""

    V: npt.NDArray[np.float32]  # (D, r), columns orthonormal
    sigma2: npt.NDArray[np.float64]  # (r,), descending
    lam: float

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """What the index stores (and checksums), in order, in its stored dtypes."""
        return {"V": np.asarray(self.V, dtype="<f4"), "sigma2": np.asarray(self.sigma2, "<f8")}


def passes(cfg: CurvatureConfig) -> int:
    """Passes over the factors per layer group."""
    return cfg.power_iters + 2


def _orth(x: torch.Tensor) -> torch.Tensor:
    q: torch.Tensor = torch.linalg.qr(x).Q
    return q


def _layer_groups(dims: list[int], ks: list[int], budget: int) -> list[list[int]]:
    groups: list[list[int]] = [[]]
    used = 0
    for i, (d, k) in enumerate(zip(dims, ks, strict=False)):
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


def compute_curvature(
    store: RowSource,
    cfg: CurvatureConfig,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    combine: Callable[[torch.Tensor], object] | None = None,
) -> dict[str, LayerCurvature]:
    """The damped low-rank basis of every layer of ``store``, in layer order. ``combine``: sums
    an accumulator in place over the processes of a distributed build (each streams its own
    rows; every pass's products are sums over rows), so all of them get the same basis."""
    layout = store.layout
    dims = [t.D for t in layout.layers]
    ks = [min(cfg.rank + cfg.oversample, d) for d in dims]
    if min(ks) == 0 and cfg.damping_abs <= 0:
        raise ConfigError("r + p = 0 leaves nothing to set lambda from; pass --damping-abs")
    rebuild = [_rebuilds(t.d1, layout.rank, k) for t, k in zip(layout.layers, ks, strict=True)]
    widest = (
        max(
            (t.D if rb else layout.rank * t.d2 * k)
            for t, k, rb in zip(layout.layers, ks, rebuild, strict=True)
        )
        or 1
    )
    block_rows = max(1, min(8192, cfg.block_bytes // (4 * widest)))
    out: dict[str, LayerCurvature] = {}
    for group in _layer_groups(dims, ks, cfg.memory_budget):
        q = {}
        for i in group:  # Omega: Gaussian (D, k), seeded per layer
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
            q[i] = torch.randn(dims[i], ks[i], generator=gen, dtype=torch.float64).to(device)
        for step in range(passes(cfg)):
            last = step == passes(cfg) - 1
            acc = _one_pass(store, q, rebuild, block_rows, last, device, progress)
            if combine is not None:
                for i in group:
                    combine(acc[i])
            if not last:
                q = {i: _orth(acc[i]) for i in group}
        for i in group:
            name = layout.layers[i].name
            out[name] = _truncate(name, acc[i], q[i], min(cfg.rank, dims[i]), cfg)
    return out


def _one_pass(
    store: RowSource,
    q: dict[int, torch.Tensor],
    rebuild: list[bool],
    block_rows: int,
    last: bool,
    device: torch.device | str,
    progress: Progress | None,
) -> dict[int, torch.Tensor]:
    """One pass over the rows for the layers ``q`` holds: G^T G Q (D, k) per layer, or on the
    last pass the Rayleigh-Ritz matrix (G Q)^T (G Q) (k, k); float64 accumulators."""
    layout = store.layout
    acc = {
        i: torch.zeros(
            (qi.shape[1], qi.shape[1]) if last else tuple(qi.shape),
            dtype=torch.float64,
            device=device,
        )
        for i, qi in q.items()
    }
    q32 = {i: qi.float() for i, qi in q.items()}
    for _, rows in store.blocks(block_rows, device):
        for i in q:
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
    return acc


def _truncate(
    name: str, ritz: torch.Tensor, q: torch.Tensor, r: int, cfg: CurvatureConfig
) -> LayerCurvature:
    """Eigenpairs of the Rayleigh-Ritz matrix -> top-r basis V = Q U_r and the damping."""
    evals, evecs = torch.linalg.eigh(ritz)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    lam = cfg.damping_abs if cfg.damping_abs > 0 else cfg.damping * float(evals.mean())
    if lam <= 0:
        raise ConfigError(f"layer {name}: curvature is zero, lambda would be 0; pass --damping-abs")
    return LayerCurvature(
        V=(q @ evecs[:, :r]).float().cpu().numpy(), sigma2=evals[:r].cpu().numpy(), lam=lam
    )
