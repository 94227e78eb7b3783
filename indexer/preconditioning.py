"""An open index's preconditioners: at the build's damping, at any other relative damping
chosen at query time, and the training examples' norms for unit normalisation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import checked_damping
from .engine.layout import RowSource
from .engine.normalize import example_norms
from .engine.scoring import Preconditioner
from .errors import ConfigError
from .storage.manifest import CurvatureRecord
from .storage.reader import Index

KEPT = 8  # dampings (and norm vectors) held at once: a few are in use at a time, not every one


def relative_damping(curvature: CurvatureRecord, damping: float | None) -> float | None:
    """``damping`` (a relative alpha for queries) checked against how an index's basis was
    computed; None where it is the build's own (ConfigError: out of range, or the index was
    built with an absolute lambda)."""
    if damping is None or damping == curvature.damping and curvature.relative:
        return None
    checked_damping(damping)
    if not curvature.relative:
        raise ConfigError(
            "this index was built with an absolute lambda (--damping-abs): a relative "
            "damping at query time needs an index built with --damping"
        )
    return float(damping)


@dataclass
class Preconditioning:
    index: Index
    device: torch.device
    built: dict[str, Preconditioner]  # at the build's lambda
    _damped: dict[float, dict[str, Preconditioner]] = field(default_factory=dict)
    _norms: dict[float | None, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def load(cls, index: Index, device: torch.device) -> Preconditioning:
        basis = index.curvature()
        pre = {n: basis.method.preconditioner(c, device) for n, c in basis.items()}
        return cls(index, device, pre)

    def canonical(self, damping: float | None) -> float | None:
        return relative_damping(self.index.curvature_record, damping)

    def at(self, damping: float | None) -> dict[str, Preconditioner]:
        """The preconditioners at relative damping alpha = ``damping`` (None: the build's).
        No basis depends on the damping (V, sigma^2; or Q_A, Q_S, Lambda), and the build set
        each layer's lambda = alpha_build * m_layer (m: the mean of the top eigenvalues, or of
        Lambda), so alpha gives lambda = lambda_build * alpha / alpha_build exactly: the same
        as a build with that alpha."""
        alpha = self.canonical(damping)
        if alpha is None:
            return self.built
        if alpha not in self._damped:
            if len(self._damped) >= KEPT:
                self._damped.clear()
            scale = alpha / self.index.curvature_record.damping
            basis = self.index.curvature()
            self._damped[alpha] = {
                n: basis.method.preconditioner(c, self.device, lam=c.lam * scale)
                for n, c in basis.items()
            }
        return self._damped[alpha]

    def norms(self, store: RowSource, damping: float | None) -> torch.Tensor:
        """||H^-1/2 g_i|| (N,) of every stored row at ``damping``: one streamed pass over the
        factors on first use (the cost of one scan), then kept in memory (4 B per row)."""
        alpha = self.canonical(damping)
        if alpha not in self._norms:
            if len(self._norms) >= KEPT:
                self._norms.clear()
            self._norms[alpha] = example_norms(store, self.at(alpha), device=self.device)
        return self._norms[alpha]
