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
    grouped: bool | None = None,
) -> dict[str, LayerCurvature]:
    """The damped low-rank basis of every layer of ``store``, in layer order. ``combine``: sums
    an accumulator in place over the processes of a distributed build (each streams its own
    rows; every pass's products are sums over rows), so all of them get the same basis.
    ``grouped`` (default: on CUDA): layers of one shape go through each pass, QR and eigh
    stacked (batched calls instead of a few small ones per layer: the build on a GPU was
    dominated by this fixed per-layer cost); else one layer at a time."""
    layout = store.layout
    dims = [t.D for t in layout.layers]
    ks = [min(cfg.rank + cfg.oversample, d) for d in dims]
    if min(ks) == 0 and cfg.damping_abs <= 0:
        raise ConfigError("r + p = 0 leaves nothing to set lambda from; pass --damping-abs")
    cs = layout.ranks
    rebuild = [_rebuilds(t.d1, c, k) for t, c, k in zip(layout.layers, cs, ks, strict=True)]
    widest = (
        max(
            (t.D if rb else c * t.d2 * k)
            for t, c, k, rb in zip(layout.layers, cs, ks, rebuild, strict=True)
        )
        or 1
    )
    block_rows = max(1, min(8192, cfg.block_bytes // (4 * widest)))
    shapes: dict[int, tuple[int, ...]]
    if grouped if grouped is not None else torch.device(device).type == "cuda":
        shapes = {
            i: (t.d1, t.d2, cs[i], ks[i], int(rebuild[i])) for i, t in enumerate(layout.layers)
        }
    else:  # one layer per "shape": the per-layer path (CPU; fewer copies)
        shapes = {i: (i,) for i in range(len(layout.layers))}
    out: dict[str, LayerCurvature] = {}
    for group in _layer_groups(dims, ks, cfg.memory_budget):
        stacks: dict[tuple[int, ...], list[int]] = {}
        for i in group:
            stacks.setdefault(shapes[i], []).append(i)
        members = list(stacks.values())  # layers of one shape, stacked through every pass
        q = [  # Omega: Gaussian (D, k) per layer, seeded per layer, stacked per shape
            torch.stack([_omega(seed, i, dims[i], ks[i]) for i in layers]).to(device)
            for layers in members
        ]
        for step in range(passes(cfg)):
            last = step == passes(cfg) - 1
            acc = _one_pass(store, members, q, rebuild, block_rows, last, device, progress)
            if combine is not None:
                for a in acc:
                    combine(a)
            if not last:
                q = [_orth(a) for a in acc]
        for layers, a, qs in zip(members, acc, q, strict=True):
            for j, i in enumerate(layers):
                name = layout.layers[i].name
                out[name] = _truncate(name, a[j], qs[j], min(cfg.rank, dims[i]), cfg)
    return out


def _one_pass(
    store: RowSource,
    members: list[list[int]],
    q: list[torch.Tensor],
    rebuild: list[bool],
    block_rows: int,
    last: bool,
    device: torch.device | str,
    progress: Progress | None,
) -> list[torch.Tensor]:
    """One pass over the rows for stacks of same-shape layers (``members``, their ``q``
    (n, D, k)): G^T G Q (n, D, k) per stack, or on the last pass the Rayleigh-Ritz matrices
    (G Q)^T (G Q) (n, k, k); float64 accumulators, float32 batched GEMMs."""
    layout = store.layout
    acc = [
        torch.zeros(
            (qi.shape[0], qi.shape[2], qi.shape[2]) if last else tuple(qi.shape),
            dtype=torch.float64,
            device=device,
        )
        for qi in q
    ]
    q32 = [qi.float() for qi in q]
    for _, rows in store.blocks(block_rows, device):
        for layers, a, qs in zip(members, acc, q32, strict=True):
            if len(layers) == 1:  # one layer: 2-D products, as a layer alone always had
                a[0] += _layer_pass(
                    *layout.unpack(rows, layers[0]), qs[0], rebuild[layers[0]], last
                )
                continue
            parts = [layout.unpack(rows, i) for i in layers]
            left = torch.stack([p[0] for p in parts])  # (n, B, c, d1)
            right = torch.stack([p[1] for p in parts])  # (n, B, c, d2)
            if rebuild[layers[0]]:
                g = _rebuild_stack(left, right)  # (n, B, D)
                y = torch.bmm(g, qs)
                a += (torch.bmm(y.mT, y) if last else torch.bmm(g.mT, y)).double()
            else:
                y = _g_times_stack(left, right, qs)  # (n, B, k)
                a += (torch.bmm(y.mT, y) if last else _gt_times_stack(left, right, y)).double()
        if progress:
            progress(rows.shape[0])
    return acc


def _omega(seed: int, i: int, d: int, k: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
    return torch.randn(d, k, generator=gen, dtype=torch.float64)


def _layer_pass(
    left: torch.Tensor, right: torch.Tensor, q: torch.Tensor, rebuild: bool, last: bool
) -> torch.Tensor:
    """One layer's share of a block: G^T G Q (D, k), or (G Q)^T (G Q) (k, k) on the last
    pass, in float64."""
    if rebuild:
        g = _rebuild(left, right)  # (B, D)
        y = g @ q
        return (y.T @ y if last else g.T @ y).double()
    y = _g_times(left, right, q)  # (B, k)
    return (y.T @ y if last else _gt_times(left, right, y)).double()


def _rebuild_stack(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``_rebuild`` for n stacked layers: (n, B, c, d1), (n, B, c, d2) -> (n, B, d1*d2)."""
    n, b = left.shape[:2]
    return _rebuild(left.flatten(0, 1), right.flatten(0, 1)).view(n, b, -1)


def _g_times_stack(left: torch.Tensor, right: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``_g_times`` for n stacked layers: -> (n, B, k)."""
    return torch.stack([_g_times(lf, r, qi) for lf, r, qi in zip(left, right, q, strict=True)])


def _gt_times_stack(left: torch.Tensor, right: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``_gt_times`` for n stacked layers: -> (n, D, k)."""
    return torch.stack([_gt_times(lf, r, yi) for lf, r, yi in zip(left, right, y, strict=True)])


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
