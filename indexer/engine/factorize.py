"""Rank-c factors of per-example projected gradients: G~ (d1 x d2) ~= L R^T.

L (d1, c) carries the singular values, R (d2, c) has orthonormal columns. Two methods:
``svd`` (batched exact SVD, optimal) and ``power`` (block power iteration on an oversampled block
of c + 8 columns, Cholesky-QR re-orthonormalisation, then a Rayleigh-Ritz step by a small
eigendecomposition). Measured on gradient-like
matrices (benchmarks/bench_factorize.py): 4 oversampled iterations reach the optimal truncation
within ~1e-6 relative excess error at 2-3x less time than the SVD, while the release's plain
schedule (8 iterations of a c-column block) leaves up to ~5 % excess. ``auto`` = power, or svd
when the oversampled block already covers min(d1, d2).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch

from . import projection

POWER_OVERSAMPLE = 8
POWER_ITERS = 4


@functools.lru_cache(maxsize=64)
def _start_block(d2: int, c: int) -> torch.Tensor:
    """Deterministic (d2, c) start block, independent of torch's RNG and of batch composition."""
    return torch.from_numpy(
        projection.rademacher(projection.stream_key(0, "factor-start", "r"), d2, c)
    )


def _orth(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning x (B, n, k) (a zero matrix stays zero)."""
    if x.shape[-1] == 1:
        q: torch.Tensor = x / x.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        return q
    return _cholesky_qr2(x)


def _cholesky_qr2(x: torch.Tensor) -> torch.Tensor:
    """Cholesky QR, twice, in float64: per pass a Gram matrix, a Cholesky factor and a
    triangular solve, each one batched kernel for the whole batch, with no host sync (a GPU
    spent most of a build in torch.linalg.qr's per-matrix launches). The Gram squares the
    condition number, so float64 and a shift of 1e-12 of its trace keep the factor defined for
    nearly dependent columns; the second pass restores orthogonality to rounding."""
    y = x.double()
    for _ in range(2):
        gram = y.mT @ y
        diag = gram.diagonal(dim1=-2, dim2=-1)
        diag.add_((1e-12 * diag.sum(-1, keepdim=True)).clamp_min(1e-300))
        r = torch.linalg.cholesky_ex(gram, upper=True).L
        y = torch.linalg.solve_triangular(r, y, upper=True, left=False)
    return y.to(x.dtype)


def _top_singular(small: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-c singular triplets of small (B, k, d2), k small, from the eigenpairs of the
    (B, k, k) Gram matrix in float64 (a batched eigh instead of a batched SVD):
    u (B, k, c), s (B, c), vh (B, c, d2); rows of vh for a zero singular value are zero."""
    s64 = small.double()
    evals, evecs = torch.linalg.eigh(s64 @ s64.mT)  # ascending
    u = evecs[..., -c:].flip(-1)
    s = evals[..., -c:].flip(-1).clamp_min(0).sqrt()
    vh = (u.mT @ s64) / s.clamp_min(1e-300)[..., None]
    return u.to(small.dtype), s.to(small.dtype), vh.to(small.dtype)


def factorize_svd(g: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal rank-c factors of g (B, d1, d2) -> L (B, d1, c), R (B, d2, c)."""
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    return u[..., :c] * s[..., None, :c], vh[..., :c, :].transpose(-1, -2)


def factorize_power(
    g: torch.Tensor, c: int, iters: int = POWER_ITERS, oversample: int = POWER_OVERSAMPLE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Oversampled block power iteration: g (B, d1, d2) -> L (B, d1, c), R (B, d2, c)."""
    k = min(c + oversample, *g.shape[-2:])
    omega = _start_block(g.shape[-1], k).to(device=g.device, dtype=g.dtype)
    gt = g.transpose(-1, -2)
    y = g @ omega  # (B, d1, k)
    for _ in range(iters):
        y = g @ _orth(gt @ _orth(y))
    q = _orth(y)
    small = q.transpose(-1, -2) @ g  # (B, k, d2): Rayleigh-Ritz on the found subspace
    u, s, vh = _top_singular(small, c)
    return (q @ u) * s[..., None, :], vh.transpose(-1, -2)


def choose_method(d1: int, d2: int, c: int) -> str:
    """``svd`` when the oversampled block would cover the whole rank anyway."""
    return "svd" if c + POWER_OVERSAMPLE >= min(d1, d2) else "power"


def factorize(g: torch.Tensor, c: int, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-c factors of g (B, d1, d2) -> L (B, d1, c), R (B, d2, c) by ``method``."""
    if c > min(g.shape[-2:]):
        raise ValueError(f"rank c={c} exceeds min(d1, d2)={min(g.shape[-2:])}")
    if method == "auto":
        method = choose_method(g.shape[-2], g.shape[-1], c)
    return factorize_svd(g, c) if method == "svd" else factorize_power(g, c)


def factorize_layers(
    grads: dict[str, torch.Tensor], c: int | Mapping[str, int], method: str = "auto"
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Rank-c factors of every layer's g (B, d1, d2) (``c``: one for all, or per layer name),
    layers of the same shape and c stacked into one call (one set of batched kernels per shape
    per step, not per layer)."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, g in grads.items():
        rank = c if isinstance(c, int) else c[name]
        by_shape.setdefault((*g.shape[1:], rank), []).append(name)
    out = {}
    for shape, names in by_shape.items():
        stacked = torch.cat([grads[n] for n in names]) if len(names) > 1 else grads[names[0]]
        left, right = factorize(stacked, shape[-1], method)
        for i, name in enumerate(names):
            b = grads[name].shape[0]
            out[name] = (left[i * b : (i + 1) * b], right[i * b : (i + 1) * b])
    return out
