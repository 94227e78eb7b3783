"""The three preconditioners behind one interface (method.md sections 3, 3b).

A layer's curvature is either LoRIF's low-rank basis (``LayerCurvature``: V, sigma^2) or a
Kronecker eigenbasis with K-FAC or EK-FAC eigenvalues (``LayerKronecker``: Q_A, Q_S, Lambda);
both carry the build's lambda and name the arrays the index stores. Their preconditioners
apply H^-1 to query gradients (Q, d1, d2) and take any lambda: the bases do not depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from ..errors import IndexFormatError
from .curvature import LayerCurvature
from .kronecker import KroneckerPreconditioner, LayerKronecker
from .scoring import LayerPreconditioner, Preconditioner

Curvature = LayerCurvature | LayerKronecker
STORED = {"lowrank": ("V", "sigma2"), "kfac": ("QA", "QS", "eigenvalues")}
STORED["ekfac"] = STORED["kfac"]


def stored_arrays(kind: str) -> tuple[str, ...]:
    """The arrays a layer's curvature of ``kind`` is stored as."""
    if kind not in STORED:
        raise IndexFormatError(
            f"unknown curvature kind {kind!r} (this lorif reads {sorted(STORED)})"
        )
    return STORED[kind]


def from_arrays(kind: str, arrays: Mapping[str, npt.NDArray[Any]], lam: float) -> Curvature:
    """A layer's curvature of ``kind`` from its stored arrays."""
    if kind == "lowrank":
        return LayerCurvature(arrays["V"], arrays["sigma2"], lam)
    stored_arrays(kind)
    return LayerKronecker(arrays["QA"], arrays["QS"], arrays["eigenvalues"], lam)


def preconditioner(
    c: Curvature, device: torch.device | str = "cpu", lam: float | None = None
) -> Preconditioner:
    """H^-1 of one layer at the build's lambda, or ``lam``."""
    if isinstance(c, LayerKronecker):
        return KroneckerPreconditioner.from_curvature(c, device, lam)
    return LayerPreconditioner.from_curvature(c, device, lam)


def is_finite(c: Curvature) -> bool:
    """Finite arrays, non-negative eigenvalues and lambda > 0 (what a reader checks)."""
    values = c.sigma2 if isinstance(c, LayerCurvature) else c.eigenvalues
    return bool(
        all(np.isfinite(a).all() for a in c.arrays().values())
        and (values >= 0).all()
        and np.isfinite(c.lam)
        and c.lam > 0
    )
