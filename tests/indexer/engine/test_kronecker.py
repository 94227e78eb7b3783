"""K-FAC / EK-FAC in the projected space against dense references: the Kronecker-factored
matrix built explicitly, damped, inverted; EK-FAC's eigenvalues from the stored factors equal
those of the explicit per-example gradients; moments summed in pieces equal one sum."""

from __future__ import annotations

import numpy as np
import torch

from indexer.engine.kronecker import (
    KroneckerMoments,
    KroneckerPreconditioner,
    ekfac_eigenvalues,
    kfac,
)
from indexer.engine.layout import FactorLayout, TrackedLayer
from indexer.storage.store import MemoryFactorStore

D1, D2, C, N = 5, 7, 2, 300


def tokens(seed: int, t: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, D1, generator=g) * (0.7 ** torch.arange(D1))
    d = torch.randn(t, D2, generator=g) * (0.8 ** torch.arange(D2))
    return x, d


def factor_store(seed: int = 3) -> tuple[MemoryFactorStore, torch.Tensor]:
    """Rows of rank-C factors and the explicit gradients G~_i = L_i^T R_i (N, D1, D2)."""
    g = torch.Generator().manual_seed(seed)
    left = torch.randn(N, C, D1, generator=g)
    right = torch.randn(N, C, D2, generator=g) * (0.8 ** torch.arange(D2))
    layout = FactorLayout.uniform((TrackedLayer("l", D1, D2, D1, D2),), C)
    rows = torch.cat([left.reshape(N, -1), right.reshape(N, -1)], dim=1)
    return MemoryFactorStore.from_float(layout, rows, "fp32"), left.transpose(1, 2) @ right


def dense_solve(H: torch.Tensor, lam: float, q: torch.Tensor) -> torch.Tensor:
    """(H + lam I)^-1 vec(q) per query, vec row-major: q (Q, D1, D2)."""
    eye = torch.eye(H.shape[0], dtype=torch.float64)
    flat = q.reshape(q.shape[0], -1).double()
    return torch.linalg.solve(H + lam * eye, flat.T).T.reshape(q.shape)


def test_moments_summed_in_pieces_equal_one_sum():
    x, d = tokens(0)
    whole, a, b = KroneckerMoments(), KroneckerMoments(), KroneckerMoments()
    whole.add("l", x, d)
    a.add("l", x[:150], d[:150])
    b.add("l", x[150:].reshape(50, 5, D1), d[150:].reshape(50, 5, D2))  # (B, T, d) as captured
    a.merge(b)
    assert torch.allclose(a.A["l"], x.double().T @ x.double())
    assert torch.allclose(a.A["l"], whole.A["l"]) and torch.allclose(a.S["l"], whole.S["l"])


def test_kfac_preconditioner_equals_the_dense_kronecker_inverse():
    x, d = tokens(1)
    m = KroneckerMoments()
    m.add("l", x, d)
    A, S = m.A["l"], m.S["l"]
    layer = kfac(A, S)
    H = torch.kron(A, S)  # row-major vec(G): H[(i, j), (k, l)] = A[i, k] S[j, l]
    assert np.allclose(np.sort(layer.eigenvalues.ravel()), torch.linalg.eigvalsh(H).numpy(),
                       rtol=1e-6, atol=1e-8)  # fmt: skip
    pre = KroneckerPreconditioner.from_layer(layer, alpha=0.1)
    assert np.isclose(pre.lam, 0.1 * float(torch.linalg.eigvalsh(H).mean()), rtol=1e-6)
    q = torch.randn(3, D1, D2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    want = dense_solve(H, pre.lam, q)
    got = pre.apply(q)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_ekfac_eigenvalues_from_factors_and_its_dense_inverse():
    x, d = tokens(2)
    m = KroneckerMoments()
    m.add("l", x, d)
    base = kfac(m.A["l"], m.S["l"])
    store, G = factor_store()
    (layer,) = ekfac_eigenvalues(store, {"l": base}, block_rows=64).values()
    qa, qs = torch.as_tensor(base.QA).double(), torch.as_tensor(base.QS).double()
    want_eig = ((qa.T @ G.double() @ qs) ** 2).sum(0)  # from the explicit gradients
    assert np.allclose(layer.eigenvalues, want_eig.numpy(), rtol=1e-4)
    # the EK-FAC matrix built explicitly: (Q_A (x) Q_S) diag(vec Lambda) (Q_A (x) Q_S)^T
    Q = torch.kron(qa, qs)
    H = Q @ torch.diag(want_eig.reshape(-1)) @ Q.T
    pre = KroneckerPreconditioner.from_layer(layer, alpha=0.05)
    q = torch.randn(4, D1, D2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    want = dense_solve(H, pre.lam, q)
    got = pre.apply(q)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # and EK-FAC is exact where K-FAC is: the eigenvalues of the gradients' own second moment
    # in that basis (its diagonal), so G^T G and H agree on every eigenvector's Rayleigh quotient
    gram = G.reshape(N, -1).double().T @ G.reshape(N, -1).double()
    assert torch.allclose(torch.diagonal(Q.T @ gram @ Q), want_eig.reshape(-1), rtol=1e-6)
