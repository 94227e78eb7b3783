"""Where the rank-c truncation is optimal (method.md section 2b): in the plain Frobenius norm of
G~, or in the K-FAC-whitened norm the Kronecker preconditioners score in.

The score is a preconditioned inner product g_q^T H^-1 g_i, so the truncation of G~_i that loses
least of it is the optimal one in H's norm, not in the plain one. With the Kronecker factors of
H ~= A (x) S (the token-level moments of a sample of the build's examples), damped per side,
    W_A = (A / mean eig(A) + delta I)^-1/2,   W_S = (S / mean eig(S) + delta I)^-1/2,
the factors are the optimal rank-c ones of W_A G~ W_S, mapped back:
    W_A G~ W_S ~= L_w R_w^T   ->   L = W_A^-1 L_w,  R = W_S^-1 R_w,   G~ ~= L R^T.
The stored rows are still factors of G~ in its own coordinates, so everything that reads them
(the scan, the kernels, explanations, the curvature, EK-FAC's refit) is unchanged; only which
rank-c approximation is stored differs. At c = min(d1, d2) both are exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .factorize import factorize_layers
from .kronecker import KroneckerMoments


def _inverse_sqrt(moment: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(M / mean eigenvalue + delta I)^(-1/2) and its inverse, float32, for a symmetric M."""
    m = moment.double().cpu()
    m = m / (m.trace() / m.shape[0]).clamp_min(1e-300)
    evals, evecs = torch.linalg.eigh(m)
    root = evals.clamp_min(0).add(delta).sqrt()
    whiten = (evecs / root) @ evecs.T
    unwhiten = (evecs * root) @ evecs.T
    return whiten.float(), unwhiten.float()


@dataclass
class WhitenedTruncation:
    """Per layer (W_A, W_A^-1, W_S, W_S^-1): the whitening the factors are truncated in."""

    sides: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]

    @classmethod
    def from_moments(cls, moments: KroneckerMoments, delta: float) -> WhitenedTruncation:
        """The metric of ``moments`` (any scale: each side is divided by its mean
        eigenvalue), damped by ``delta`` on each side."""
        sides = {}
        for name in moments.A:
            wa, ua = _inverse_sqrt(moments.A[name], delta)
            ws, us = _inverse_sqrt(moments.S[name], delta)
            sides[name] = (wa, ua, ws, us)
        return cls(sides)

    def to(self, device: torch.device | str) -> WhitenedTruncation:
        """The same whitening with its matrices on ``device`` (moved once, not per batch)."""
        moved = {}
        for name, (wa, ua, ws, us) in self.sides.items():
            moved[name] = (wa.to(device), ua.to(device), ws.to(device), us.to(device))
        return WhitenedTruncation(moved)

    def factorize(
        self, grads: dict[str, torch.Tensor], c: int | Mapping[str, int], method: str = "auto"
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Rank-c factors (``c``: one for all, or per layer name), optimal in the whitened norm,
        of every layer's g (B, d1, d2) -> L (B, d1, c), R (B, d2, c) with L R^T ~= g."""
        whitened = {}
        for name, g in grads.items():
            wa, _, ws, _ = (m.to(g.device, g.dtype) for m in self.sides[name])
            whitened[name] = wa @ g @ ws
        out = {}
        for name, (left, right) in factorize_layers(whitened, c, method).items():
            _, ua, _, us = (m.to(left.device, left.dtype) for m in self.sides[name])
            out[name] = (ua @ left, us @ right)
        return out
