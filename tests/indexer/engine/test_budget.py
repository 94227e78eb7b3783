"""Per-layer ranks for a storage budget (``--bytes-per-example``): the energy the chooser ranks
by and the choice itself."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from indexer.engine.budget import SpectrumSample, choose_ranks, min_bytes
from indexer.engine.layout import TrackedLayer
from indexer.errors import ConfigError
from tests.indexer.engine.test_truncation import _errors, _setting


def test_the_energy_left_out_is_the_whitened_truncation_error():
    """sum_{k > c} energy_k (times the scale and the sample size) is exactly what the rank-c
    whitened truncation loses in the whitened norm, for every c: the chooser's units are the
    truncation's."""
    grads, moments = _setting(b=24)
    spectra = SpectrumSample(moments, delta=0.3, device="cpu")
    spectra.add({"layer": grads["layer"][:10]})
    spectra.add({"layer": grads["layer"][10:]})
    energy = spectra.energy()["layer"]
    assert energy.shape == (10,) and (np.diff(energy) <= 1e-12 * energy[0]).all()
    scale = spectra.scale["layer"] * 24
    for c in (1, 3, 7):
        left, right = spectra.metric.factorize(grads, c, "svd")["layer"]
        _, whitened = _errors(spectra.metric, grads["layer"], left, right)
        assert whitened == pytest.approx(energy[c:].sum() * scale, rel=1e-3), c


def _layers(dims):
    return tuple(TrackedLayer(f"l{i}", 4 * a, 4 * b, a, b) for i, (a, b) in enumerate(dims))


def test_equal_costs_get_the_best_allocation():
    """With one cost per factor the greedy choice keeps the most energy of every allocation
    within the budget (brute force over all of them)."""
    layers = _layers([(5, 5)] * 3)
    gen = np.random.default_rng(0)
    energy = {
        t.name: np.sort(gen.exponential(size=5) * (i + 1))[::-1] for i, t in enumerate(layers)
    }
    for extra in range(9):
        budget = min_bytes(layers, 2) + extra * 20
        ranks = choose_ranks(layers, energy, budget, value_bytes=2)
        assert sum(c * 20 for c in ranks) <= budget
        best = max(
            sum(energy[t.name][:c].sum() for t, c in zip(layers, cs, strict=True))
            for cs in itertools.product(range(1, 6), repeat=3)
            if sum(c * 20 for c in cs) <= budget
        )
        kept = sum(energy[t.name][:c].sum() for t, c in zip(layers, ranks, strict=True))
        assert kept == pytest.approx(best), (extra, ranks)


def test_energy_per_byte_decides_and_ranks_stay_within_each_layer():
    """A narrow layer's factor costs less: it wins over a wide layer's of the same energy; a
    layer stops at min(d1, d2); an unused remainder stays unused; too small a budget is
    refused in one line."""
    layers = _layers([(2, 2), (20, 20)])  # a factor costs 4 and 40 values
    energy = {"l0": np.array([9.0, 1.0]), "l1": np.array([9.0, 1.0, 0.5] + [0.01] * 17)}
    assert choose_ranks(layers, energy, (4 + 40) + 4, 1) == (2, 1)  # l0's second: 0.25 per value
    assert choose_ranks(layers, energy, (4 + 40) + 40 + 4, 1) == (2, 2)
    assert choose_ranks(layers, energy, 10_000, 1) == (2, 20)  # every factor there is
    with pytest.raises(ConfigError, match="less than c = 1 in every tracked layer needs"):
        choose_ranks(layers, energy, 43, 1)
