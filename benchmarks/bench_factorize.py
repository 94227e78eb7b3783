"""Rank-c factorization: oversampled power iteration vs batched SVD vs the release's schedule.

Matrices are gradient-like: G = X^T Y summed over T positions with decaying output magnitudes.
Prints time per batch and the worst relative excess Frobenius error over the optimal rank-c
truncation. Run:  python benchmarks/bench_factorize.py
"""

from __future__ import annotations

import time

import torch

from indexer.engine.factorize import factorize_power, factorize_svd


def excess_error(g: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Per-example ||G - L R^T||_F / ||G - G_c*||_F - 1 (0 = optimal), G_c* the best rank c."""
    c = left.shape[-1]
    s = torch.linalg.svdvals(g)
    best = s[..., c:].square().sum(-1).sqrt()
    err = (g - left @ right.transpose(-1, -2)).flatten(-2).norm(dim=-1)
    return err / best.clamp_min(torch.finfo(g.dtype).tiny) - 1


def release_schedule(g: torch.Tensor, c: int):
    """The paper release's plain block power iteration: 8 (c = 1) or 16 iterations, no
    oversampling."""
    return factorize_power(g, c, iters=8 if c == 1 else 16, oversample=0)


def timed(fn, *args, repeat: int = 5):
    fn(*args)
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn(*args)
    return (time.perf_counter() - t) / repeat, out


def main() -> None:
    torch.manual_seed(0)
    print(f"{'B x d1 x d2':>16s} {'c':>2s}  {'method':<22s}{'ms/batch':>9s}{'worst excess':>14s}")
    for b, d1, d2 in [(32, 36, 96), (32, 64, 176), (8, 128, 128), (8, 256, 256)]:
        t = 64
        x = torch.randn(b, t, d1)
        y = torch.randn(b, t, d2) * torch.exp(-torch.arange(t) / 8.0)[None, :, None]
        g = x.transpose(1, 2) @ y
        for c in (1, 4, 8):
            for name, fn in (
                ("power c+8, 4 iters", factorize_power),
                ("svd", factorize_svd),
                ("release (8/16 iters)", release_schedule),
            ):
                sec, (left, right) = timed(fn, g, c)
                worst = float(excess_error(g, left, right).max())
                print(f"{b:4d} x{d1:4d} x{d2:4d} {c:2d}  {name:<22s}{sec * 1e3:9.2f}{worst:14.2e}")


if __name__ == "__main__":
    main()
