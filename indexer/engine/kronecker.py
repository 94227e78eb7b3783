"""Kronecker-factored curvature in the projected space: K-FAC and EK-FAC (method.md section 3b).

Per tracked layer, the token-level second moments of the projected inputs x~ = x P_in and
output gradients d~ = dy P_out, summed while featurizing:
    A = sum_t x~_t x~_t^T  (d1, d1),        S = sum_t d~_t d~_t^T  (d2, d2).
K-FAC takes H ~= A (x) S on vec(G~) (row-major, the layout of the factor rows): eigenbasis
Q_A (x) Q_S, eigenvalues lambda_A,a * lambda_S,b. EK-FAC keeps that eigenbasis and refits the
eigenvalues to the per-example gradients, which the stored factors give in one pass:
    Lambda_ab = sum_i (Q_A^T G~_i Q_S)_ab^2,   G~_i = L_i^T R_i  (sum over the rank-c terms).
Preconditioning, for any damping chosen at query time (lam = alpha * mean(Lambda)):
    P = Q_A [(Q_A^T G~ Q_S) / (Lambda + lam)] Q_S^T.
Memory per layer O(d1^2 + d2^2 + d1 d2), against O(D r) for the low-rank basis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from ..errors import ConfigError
from .layout import RowSource

if TYPE_CHECKING:  # the settings are only read: no import of the config at run time
    from ..config import CurvatureConfig

Progress = Callable[[int], object]


@dataclass
class KroneckerMoments:
    """Running sums A (d1, d1) and S (d2, d2) per layer (float64)."""

    A: dict[str, torch.Tensor] = field(default_factory=dict)
    S: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, name: str, x: torch.Tensor, d: torch.Tensor) -> None:
        """x (..., d1), d (..., d2): projected inputs and output gradients of real tokens
        (masked positions are zero, so they add nothing)."""
        x2, d2 = x.reshape(-1, x.shape[-1]).double(), d.reshape(-1, d.shape[-1]).double()
        for acc, v in ((self.A, x2), (self.S, d2)):
            term = v.T @ v
            acc[name] = term if name not in acc else acc[name] + term

    def merge(self, other: KroneckerMoments) -> None:
        for mine, theirs in ((self.A, other.A), (self.S, other.S)):
            for name, v in theirs.items():
                mine[name] = v.clone() if name not in mine else mine[name] + v


@dataclass
class LayerKronecker:
    """One layer's Kronecker eigenbasis, (K-FAC or EK-FAC) eigenvalues and the build's lambda."""

    QA: npt.NDArray[np.float32]  # (d1, d1), columns orthonormal
    QS: npt.NDArray[np.float32]  # (d2, d2)
    eigenvalues: npt.NDArray[np.float64]  # (d1, d2), >= 0
    lam: float = 0.0

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """What the index stores (and checksums), in order, in its stored dtypes."""
        return {
            "QA": np.asarray(self.QA, dtype="<f4"),
            "QS": np.asarray(self.QS, dtype="<f4"),
            "eigenvalues": np.asarray(self.eigenvalues, dtype="<f8"),
        }

    def damping(self, alpha: float) -> float:
        """lam = alpha * mean(Lambda): relative, so the moments' overall scale cancels."""
        lam = alpha * float(self.eigenvalues.mean())
        if lam <= 0:
            raise ConfigError("the layer's curvature is zero: lambda would be 0")
        return lam


def kfac(A: torch.Tensor, S: torch.Tensor) -> LayerKronecker:
    """Eigendecompose A and S: the K-FAC eigenbasis with eigenvalues lambda_A (x) lambda_S."""
    la, qa = torch.linalg.eigh(A.double().cpu())
    ls, qs = torch.linalg.eigh(S.double().cpu())
    eig = torch.outer(la.clamp_min(0), ls.clamp_min(0))
    return LayerKronecker(qa.float().numpy(), qs.float().numpy(), eig.numpy())


def ekfac_eigenvalues(
    store: RowSource,
    bases: dict[str, LayerKronecker],
    device: torch.device | str = "cpu",
    block_rows: int = 4096,
    progress: Progress | None = None,
    combine: Callable[[torch.Tensor], object] | None = None,
) -> dict[str, LayerKronecker]:
    """EK-FAC: the same eigenbases with Lambda_ab = sum_i (Q_A^T G~_i Q_S)_ab^2 over the rows
    of ``store`` (one pass; ``combine`` sums the accumulators over distributed processes)."""
    layout = store.layout
    qa = {n: torch.as_tensor(b.QA, device=device) for n, b in bases.items()}
    qs = {n: torch.as_tensor(b.QS, device=device) for n, b in bases.items()}
    acc = {
        t.name: torch.zeros(t.d1, t.d2, dtype=torch.float64, device=device) for t in layout.layers
    }
    for _, rows in store.blocks(block_rows, device):
        for i, t in enumerate(layout.layers):
            left, right = layout.unpack(rows, i)  # (B, c, d1), (B, c, d2)
            rotated = (left @ qa[t.name]).transpose(1, 2) @ (right @ qs[t.name])  # (B, d1, d2)
            acc[t.name] += (rotated.double() ** 2).sum(0)
        if progress:
            progress(rows.shape[0])
    if combine is not None:
        for v in acc.values():
            combine(v)
    return {n: replace(b, eigenvalues=acc[n].cpu().numpy()) for n, b in bases.items()}


def compute_kronecker(
    store: RowSource,
    moments: KroneckerMoments,
    cfg: CurvatureConfig,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    combine: Callable[[torch.Tensor], object] | None = None,
    refit: bool = False,
) -> dict[str, LayerKronecker]:
    """The build's K-FAC curvature of every layer of ``store`` (``refit``: EK-FAC's): the
    eigenbases of ``moments`` (this process's sums; ``combine`` adds the other processes'),
    with ``refit`` the eigenvalues refit over the rows, and lambda per layer."""
    layers = store.layout.layers
    missing = [t.name for t in layers if t.name not in moments.A]
    if missing:
        raise ConfigError(f"no K-FAC moments for layer {missing[0]} (were they accumulated?)")
    if combine is not None:
        for t in layers:
            combine(moments.A[t.name])
            combine(moments.S[t.name])
    bases = {t.name: kfac(moments.A[t.name], moments.S[t.name]) for t in layers}
    if refit:
        widest = max((t.d1 * t.d2 for t in layers), default=1)
        block_rows = max(1, min(8192, cfg.block_bytes // (8 * widest)))
        bases = ekfac_eigenvalues(store, bases, device, block_rows, progress, combine)
    out = {}
    for name, b in bases.items():
        lam = cfg.damping_abs if cfg.damping_abs > 0 else b.damping(cfg.damping)
        out[name] = replace(b, lam=lam)
    return out


@dataclass
class KroneckerPreconditioner:
    """(Q_A (x) Q_S) diag(Lambda + lam)^-1 (Q_A (x) Q_S)^T of one layer, applied in
    O(d1^2 d2 + d1 d2^2) per query."""

    QA: torch.Tensor  # (d1, d1)
    QS: torch.Tensor  # (d2, d2)
    inverse: torch.Tensor  # (d1, d2): 1 / (Lambda + lam)
    lam: float

    @classmethod
    def from_layer(
        cls, layer: LayerKronecker, alpha: float, device: torch.device | str = "cpu"
    ) -> KroneckerPreconditioner:
        """At relative damping ``alpha`` (lam = alpha * mean(Lambda))."""
        return cls.from_curvature(layer, device, layer.damping(alpha))

    @classmethod
    def from_curvature(
        cls, layer: LayerKronecker, device: torch.device | str = "cpu", lam: float | None = None
    ) -> KroneckerPreconditioner:
        """At the build's lambda, or ``lam``."""
        lam = layer.lam if lam is None else lam
        inverse = 1.0 / (torch.as_tensor(layer.eigenvalues, dtype=torch.float64) + lam)
        return cls(
            torch.as_tensor(layer.QA).to(device),
            torch.as_tensor(layer.QS).to(device),
            inverse.float().to(device),
            lam,
        )

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """g (Q, d1, d2) -> P (Q, d1, d2), computed in g's dtype."""
        qa, qs, inv = self.QA.to(g.dtype), self.QS.to(g.dtype), self.inverse.to(g.dtype)
        return qa @ ((qa.T @ g @ qs) * inv) @ qs.T
