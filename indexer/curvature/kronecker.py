"""K-FAC and EK-FAC in the projected space (method.md section 3b): token-level Kronecker
factors A, S summed while featurizing (kept per shard), their eigenbases, and EK-FAC's
eigenvalues refit over the stored rows in one pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy.typing as npt
import torch

from ..engine.kronecker import (
    KroneckerMoments,
    KroneckerPreconditioner,
    LayerKronecker,
    compute_kronecker,
)
from ..engine.layout import RowSource, TrackedLayer
from ..errors import ConfigError
from .base import Basis, Combine, CurvatureMethod, Progress

if TYPE_CHECKING:
    from ..config import BuildConfig, CurvatureConfig


class KFAC(CurvatureMethod):
    kind = "kfac"
    arrays = ("QA", "QS", "eigenvalues")
    needs_moments = True
    refit = False  # EK-FAC: eigenvalues refit to the per-example gradients

    def validate(self, cfg: BuildConfig) -> None:
        if cfg.shard_size <= 0:
            raise ConfigError(
                f"--curvature {self.kind} needs --shard-size N (its moments are kept per shard)"
            )

    def passes(self, cfg: CurvatureConfig) -> int:
        return 1 if self.refit else 0

    def compute(
        self,
        store: RowSource,
        cfg: BuildConfig,
        device: torch.device,
        progress: Progress | None = None,
        combine: Combine | None = None,
        moments: Callable[[], KroneckerMoments] | None = None,
    ) -> Basis:
        if moments is None:
            raise ConfigError(f"--curvature {self.kind}: no K-FAC moments for these rows")
        layers = compute_kronecker(
            store, moments(), cfg.curvature, device, progress, combine, refit=self.refit
        )
        return Basis(self.kind, layers)

    def from_arrays(self, arrays: Mapping[str, npt.NDArray[Any]], lam: float) -> LayerKronecker:
        return LayerKronecker(arrays["QA"], arrays["QS"], arrays["eigenvalues"], lam)

    def preconditioner(
        self, layer: LayerKronecker, device: torch.device | str = "cpu", lam: float | None = None
    ) -> KroneckerPreconditioner:
        return KroneckerPreconditioner.from_curvature(layer, device, lam)

    def eigenvalues(self, layer: LayerKronecker) -> npt.NDArray[Any]:
        return layer.eigenvalues

    def basis_bytes(self, layer: TrackedLayer, rank: int) -> int:
        # Q_A (d1, d1) and Q_S (d2, d2) float32, eigenvalues (d1, d2) float64
        return 4 * (layer.d1**2 + layer.d2**2) + 8 * layer.D

    def describe(self, rank: int) -> str:
        return f"{self.kind} (Kronecker)"


class EKFAC(KFAC):
    kind = "ekfac"
    refit = True
