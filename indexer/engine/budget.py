"""Per-layer ranks for a storage budget (``--bytes-per-example``, method.md section 2c).

A row costs sum_l c_l (d1_l + d2_l) values. Which c_l buy the most score for those bytes? The
score of a layer is a preconditioned inner product g_q^T H^-1 g_i; for queries drawn like the
training examples (E[g_q g_q^T] ~ H) the expected squared score error of a truncation error E_i
is ||E_i||^2 in H^-1's norm. With H ~= A (x) S (the K-FAC moments of a sample) that is the
whitened norm of ``truncation.py`` divided by the scale it normalises away, mean eig(A) *
mean eig(S); the rank-c truncation of the whitened gradient loses the tail sum_{k>c} sigma_k^2
of its singular values. So the energy one more factor keeps in layer l is the mean over the
sample of sigma_{c+1}^2 (in those units), it costs d1 + d2 values, and since sigma_k^2 falls with
k the greedy choice by energy per byte, from c = 1 everywhere up to the budget, is the optimal
fractional allocation.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch

from ..errors import ConfigError
from .kronecker import KroneckerMoments
from .layout import TrackedLayer
from .truncation import WhitenedTruncation


class SpectrumSample:
    """The mean squared singular values of each layer's whitened G~ over a sample, in score
    units (``add`` batch by batch, then ``energy``)."""

    def __init__(self, moments: KroneckerMoments, delta: float, device: torch.device | str):
        self.metric = WhitenedTruncation.from_moments(moments, delta).to(device)
        self.scale = {
            name: float(moments.A[name].diagonal().mean() * moments.S[name].diagonal().mean())
            for name in moments.A
        }
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, grads: Mapping[str, torch.Tensor]) -> None:
        """One batch of projected gradients {name: (B, d1, d2)}."""
        for name, g in grads.items():
            wa, _, ws, _ = self.metric.sides[name]
            s2 = torch.linalg.svdvals((wa @ g.float() @ ws).double()) ** 2  # (B, min(d1, d2))
            total = s2.sum(0).cpu()
            self.sums[name] = self.sums[name] + total if name in self.sums else total
        self.count += next(iter(grads.values())).shape[0] if grads else 0

    def energy(self) -> dict[str, npt.NDArray[np.float64]]:
        """{name: (min(d1, d2),) mean sigma_k^2 / scale, descending}."""
        n = max(self.count, 1)
        return {
            name: (s / n / max(self.scale[name], 1e-300)).numpy() for name, s in self.sums.items()
        }


def min_bytes(layers: tuple[TrackedLayer, ...], value_bytes: int) -> int:
    """Bytes per example at c = 1 in every layer: the smallest budget there is."""
    return sum(t.d1 + t.d2 for t in layers) * value_bytes


def check_budget(layers: tuple[TrackedLayer, ...], budget: int, value_bytes: int) -> None:
    """ConfigError (one line) when ``budget`` does not cover c = 1 in every layer."""
    floor = min_bytes(layers, value_bytes)
    if budget < floor:
        raise ConfigError(
            f"--bytes-per-example {budget} is less than c = 1 in every tracked layer needs "
            f"({floor} bytes); raise it, track fewer layers or use a larger --proj-factor"
        )


def choose_ranks(
    layers: tuple[TrackedLayer, ...],
    energy: Mapping[str, npt.NDArray[np.float64]],
    budget: int,
    value_bytes: int,
) -> tuple[int, ...]:
    """c per layer (>= 1, <= min(d1, d2)) with sum c_l (d1_l + d2_l) * value_bytes <= budget,
    each further factor going where it keeps the most energy per byte (ties: the earlier
    layer). ConfigError when the budget does not cover c = 1 everywhere."""
    check_budget(layers, budget, value_bytes)
    ranks = [1] * len(layers)
    left = budget - min_bytes(layers, value_bytes)
    cost = [(t.d1 + t.d2) * value_bytes for t in layers]

    def gain(i: int) -> float:
        e = energy[layers[i].name]
        return float(e[ranks[i]]) / cost[i] if ranks[i] < len(e) else -1.0  # len: min(d1, d2)

    heap = [(-gain(i), i) for i in range(len(layers))]
    heapq.heapify(heap)
    while heap:
        g, i = heapq.heappop(heap)
        if g >= 0 or cost[i] > left:  # nothing left to keep, or it no longer fits
            continue
        ranks[i] += 1
        left -= cost[i]
        heapq.heappush(heap, (-gain(i), i))
    return tuple(ranks)
