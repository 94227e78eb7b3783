"""LoRIF's preconditioner (method.md section 3): per layer a truncated SVD of G^T G computed by
a randomized SVD streamed over the stored factors, applied with the Woodbury identity."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy.typing as npt
import torch

from ..engine.kronecker import KroneckerMoments
from ..engine.layout import RowSource, TrackedLayer
from ..engine.lowrank import LayerCurvature, compute_curvature
from ..engine.lowrank import passes as svd_passes
from ..engine.scoring import LayerPreconditioner
from ..errors import ConfigError
from .base import Basis, Combine, CurvatureMethod, Progress

if TYPE_CHECKING:
    from ..config import BuildConfig, CurvatureConfig


class LowRank(CurvatureMethod):
    kind = "lowrank"
    arrays = ("V", "sigma2")

    def validate(self, cfg: BuildConfig) -> None:
        c = cfg.curvature
        if c.rank + c.oversample == 0 and c.damping_abs <= 0:
            raise ConfigError("r + p = 0 leaves nothing to set lambda from; pass --damping-abs")

    def passes(self, cfg: CurvatureConfig) -> int:
        return svd_passes(cfg)

    def compute(
        self,
        store: RowSource,
        cfg: BuildConfig,
        device: torch.device,
        progress: Progress | None = None,
        combine: Combine | None = None,
        moments: Callable[[], KroneckerMoments] | None = None,
    ) -> Basis:
        layers = compute_curvature(store, cfg.curvature, device, cfg.seed, progress, combine)
        return Basis(self.kind, layers)

    def from_arrays(self, arrays: Mapping[str, npt.NDArray[Any]], lam: float) -> LayerCurvature:
        return LayerCurvature(arrays["V"], arrays["sigma2"], lam)

    def preconditioner(
        self, layer: LayerCurvature, device: torch.device | str = "cpu", lam: float | None = None
    ) -> LayerPreconditioner:
        return LayerPreconditioner.from_curvature(layer, device, lam)

    def eigenvalues(self, layer: LayerCurvature) -> npt.NDArray[Any]:
        return layer.sigma2

    def basis_bytes(self, layer: TrackedLayer, rank: int) -> int:
        r = min(rank, layer.D)
        return 4 * layer.D * r + 8 * r  # V (D, r) float32, sigma^2 (r,) float64

    def describe(self, rank: int) -> str:
        return f"lowrank r {rank}"
