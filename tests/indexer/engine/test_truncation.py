"""The rank-c truncation in the K-FAC-whitened norm (``--truncation kfac``)."""

from __future__ import annotations

import torch

from indexer.engine.factorize import factorize_layers
from indexer.engine.kronecker import KroneckerMoments
from indexer.engine.truncation import WhitenedTruncation


def _setting(seed: int = 0, b: int = 16, d1: int = 12, d2: int = 10):
    """Gradients whose large directions are where the moments are small (so the two norms
    disagree about which rank-c approximation is best), and the moments."""
    gen = torch.Generator().manual_seed(seed)
    scale_a = torch.logspace(0, -2, d1, dtype=torch.float64)
    scale_s = torch.logspace(0, -2, d2, dtype=torch.float64)
    qa = torch.linalg.qr(torch.randn(d1, d1, generator=gen, dtype=torch.float64))[0]
    qs = torch.linalg.qr(torch.randn(d2, d2, generator=gen, dtype=torch.float64))[0]
    x = torch.randn(400, d1, generator=gen, dtype=torch.float64) * scale_a @ qa.T
    d = torch.randn(400, d2, generator=gen, dtype=torch.float64) * scale_s @ qs.T
    moments = KroneckerMoments()
    moments.add("layer", x, d)
    g = torch.randn(b, d1, d2, generator=gen, dtype=torch.float64)
    return {"layer": g.float()}, moments


def _errors(metric: WhitenedTruncation, g: torch.Tensor, left, right) -> tuple[float, float]:
    """(plain, whitened) squared Frobenius errors of L R^T against g, summed over the batch."""
    wa, _, ws, _ = metric.sides["layer"]
    diff = (g - left @ right.mT).double()
    return float((diff**2).sum()), float(((wa.double() @ diff @ ws.double()) ** 2).sum())


def test_the_whitening_is_the_damped_inverse_square_root():
    _, moments = _setting()
    metric = WhitenedTruncation.from_moments(moments, delta=0.1)
    wa, ua, ws, us = (m.double() for m in metric.sides["layer"])
    a = moments.A["layer"] / (moments.A["layer"].trace() / 12)
    assert torch.allclose(wa @ wa @ (a + 0.1 * torch.eye(12, dtype=torch.float64)),
                          torch.eye(12, dtype=torch.float64), atol=1e-4)  # fmt: skip
    assert torch.allclose(ua @ wa, torch.eye(12, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(us @ ws, torch.eye(10, dtype=torch.float64), atol=1e-4)


def test_each_truncation_is_optimal_in_its_own_norm():
    grads, moments = _setting()
    metric = WhitenedTruncation.from_moments(moments, delta=0.01)
    g = grads["layer"]
    for c in (1, 3):
        plain = factorize_layers(grads, c, "svd")["layer"]
        white = metric.factorize(grads, c, "svd")["layer"]
        plain_err = _errors(metric, g, *plain)
        white_err = _errors(metric, g, *white)
        assert white_err[1] < 0.9 * plain_err[1], (c, white_err, plain_err)
        assert plain_err[0] < 0.9 * white_err[0], (c, white_err, plain_err)
        # the whitened one is the optimal truncation of W_A G W_S: its error is the tail of
        # that matrix's singular values
        wa, _, ws, _ = metric.sides["layer"]
        tail = torch.linalg.svdvals((wa @ g @ ws).double())[:, c:]
        assert abs(white_err[1] - float((tail**2).sum())) < 1e-3 * white_err[1]
    # the power method finds the same factors as the SVD
    power = _errors(metric, g, *metric.factorize(grads, 3, "power")["layer"])
    assert abs(power[1] - white_err[1]) < 1e-3 * white_err[1]


def test_full_rank_reproduces_the_gradient():
    grads, moments = _setting()
    left, right = WhitenedTruncation.from_moments(moments, delta=0.1).factorize(grads, 10)["layer"]
    assert torch.allclose(left @ right.mT, grads["layer"], atol=1e-4)
