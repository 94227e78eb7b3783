"""An open index's preconditioners: at the build's damping, at any other relative damping
chosen at query time, and the training examples' norms for unit normalisation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine.layout import RowSource
from ..engine.normalize import example_norms
from ..engine.scoring import Preconditioner
from ..storage.reader import Index
from .options import QueryOptions

KEPT = 8  # dampings (and norm vectors) held at once: a few are in use at a time, not every one


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
        """A damping a caller gave, checked and canonical (see QueryOptions.for_index)."""
        return QueryOptions(damping=damping).for_index(self.index.curvature_record).damping

    def at(self, alpha: float | None) -> dict[str, Preconditioner]:
        """The preconditioners at relative damping ``alpha``, canonical (None: the build's).
        No basis depends on the damping (V, sigma^2; or Q_A, Q_S, Lambda), and the build set
        each layer's lambda = alpha_build * m_layer (m: the mean of the top eigenvalues, or of
        Lambda), so alpha gives lambda = lambda_build * alpha / alpha_build exactly: the same
        as a build with that alpha."""
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

    def norms(self, store: RowSource, alpha: float | None) -> torch.Tensor:
        """||H^-1/2 g_i|| (N,) of every stored row at canonical ``alpha``: one streamed pass
        over the factors on first use (the cost of one scan), then kept in memory (4 B/row)."""
        if alpha not in self._norms:
            if len(self._norms) >= KEPT:
                self._norms.clear()
            self._norms[alpha] = example_norms(store, self.at(alpha), device=self.device)
        return self._norms[alpha]
