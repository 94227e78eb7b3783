"""Streamed randomized SVD of G^T G, Woodbury, and bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from indexer.config import CurvatureConfig
from indexer.engine.layout import FactorLayout, TrackedLayer
from indexer.engine.lowrank import LayerCurvature, compute_curvature
from indexer.engine.scoring import LayerPreconditioner
from indexer.storage.store import MemoryFactorStore
from tests.helpers import ROOT
from tests.reference import woodbury_inverse


def decaying_store(n=3000, d1=8, d2=8, c=2, seed=0):
    """Factor rows whose G^T G has a decaying spectrum."""
    g = torch.Generator().manual_seed(seed)
    left = torch.randn(n, c, d1, generator=g) * (0.6 ** torch.arange(d1))
    right = torch.randn(n, c, d2, generator=g) * (0.75 ** torch.arange(d2))
    layout = FactorLayout.uniform((TrackedLayer("l", d1, d2, d1, d2),), c)
    rows = torch.cat([left.reshape(n, -1), right.reshape(n, -1)], dim=1)
    dense = (left.transpose(1, 2) @ right).reshape(n, -1).double()  # G (N, D)
    return MemoryFactorStore.from_float(layout, rows, "fp32"), dense


def test_randomized_svd_eigenvalues_match_eigh():
    store, G = decaying_store()
    out = compute_curvature(store, CurvatureConfig(rank=16, oversample=10, power_iters=3))["l"]
    exact = torch.linalg.eigvalsh(G.T @ G).flip(0).numpy()
    rel = np.abs(out.sigma2 - exact[:16]) / exact[:16]
    assert rel.max() < 1e-3, rel
    V = out.V.astype(np.float64)
    assert np.allclose(V.T @ V, np.eye(16), atol=1e-5)
    # lambda = 0.1 * mean of the r + p Ritz values
    assert 0.1 * exact[:26].mean() * 0.99 < out.lam < 0.1 * exact[:26].mean() * 1.01


def test_absolute_damping_and_rank_capped_at_D():
    store, _ = decaying_store(n=200, d1=4, d2=4)
    out = compute_curvature(store, CurvatureConfig(rank=100, damping_abs=0.5))["l"]
    assert out.V.shape == (16, 16) and out.lam == 0.5


def test_woodbury_equals_dense_inverse():
    g = torch.Generator().manual_seed(1)
    D, r, lam = 24, 9, 0.3
    V = torch.linalg.qr(torch.randn(D, r, generator=g, dtype=torch.float64)).Q
    sigma2 = torch.rand(r, generator=g, dtype=torch.float64) * 10
    dense = torch.linalg.inv(V @ torch.diag(sigma2) @ V.T + lam * torch.eye(D, dtype=torch.float64))
    assert torch.allclose(woodbury_inverse(V, sigma2, lam), dense, rtol=1e-10, atol=1e-10)
    pre = LayerPreconditioner.from_curvature(LayerCurvature(V.numpy(), sigma2.numpy(), lam))
    q = torch.randn(3, 4, 6, generator=g)
    want = (q.reshape(3, -1).double() @ dense).reshape(3, 4, 6)
    assert torch.allclose(pre.apply(q).double(), want, rtol=1e-4, atol=1e-5)


def test_peak_memory_is_far_below_dense_sizes():
    """N * D * 4 = 5.2 GB and D^2 * 4 = 4.3 GB; the pass must stay within a few hundred MB."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_curvature_memory.py"),
        "--n",
        "40000",
        "--d1",
        "256",
        "--d2",
        "128",
        "--r",
        "10",
        "--p",
        "10",
        "--q",
        "1",
        "--json",
    ]
    res = json.loads(
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert res["G_bytes_fp32"] > 5e9 and res["GtG_bytes_fp32"] > 4e9
    assert res["rss_growth_bytes"] < 400e6, res
    assert res["peak_rss_bytes"] < 1.5e9, res


def test_same_shape_layers_stacked_give_the_per_layer_basis():
    """The grouped path (CUDA's default: a shape's layers through each pass, QR and eigh
    together) computes what one layer at a time does; both factorisations (rebuilt blocks
    and the factored products, d1 > c k) and a layer of its own shape are covered, and a
    storage budget's c per layer (a shape's layers of another c are not stacked with it)."""
    shapes = [(16, 16), (16, 16), (24, 8), (16, 16), (40, 40), (40, 40)]
    layers = tuple(TrackedLayer(f"l{i}", 4 * a, 4 * b, a, b) for i, (a, b) in enumerate(shapes))
    for ranks in ((1,) * 6, (1, 2, 1, 1, 3, 1)):
        _stacked_equals_per_layer(FactorLayout(layers, ranks))


def _stacked_equals_per_layer(layout: FactorLayout) -> None:
    gen = torch.Generator().manual_seed(3)
    store = MemoryFactorStore.from_float(layout, torch.randn(2000, layout.width, generator=gen))
    cfg = CurvatureConfig(rank=12, oversample=4)  # k = 16: rebuilt at d1 <= 16, factored at 24+
    one = compute_curvature(store, cfg, grouped=False)
    stacked = compute_curvature(store, cfg, grouped=True)
    for name, c in one.items():
        s = stacked[name]
        np.testing.assert_allclose(s.sigma2, c.sigma2, rtol=1e-5)
        assert s.lam == pytest.approx(c.lam, rel=1e-6)
        overlap = np.linalg.svd(c.V[:, :8].T @ s.V[:, :8], compute_uv=False)
        assert overlap.min() > 1 - 1e-4, (name, overlap.min())
