"""``--bytes-per-example``: the per-layer ranks a build stores, chosen on a sample of its
examples (``engine/budget.py``; method.md section 2c)."""

from __future__ import annotations

import logging

from ..config import BuildConfig
from ..data import Example
from ..engine.budget import SpectrumSample, check_budget, choose_ranks
from ..models.featurizer import Featurizer
from ..storage.codec import NUMPY_STORAGE
from .steps import sample_batches, sample_moments

log = logging.getLogger("lorif")


def layer_ranks(
    cfg: BuildConfig, featurizer: Featurizer, examples: list[Example]
) -> tuple[int, ...]:
    """c per tracked layer: ``--rank`` for all, or under ``--bytes-per-example`` the choice
    for the first ``--truncation-sample`` examples (two passes over them: the K-FAC moments,
    then the whitened spectra). Every process of a build computes the same ones."""
    layers = tuple(featurizer.layers)
    if not cfg.bytes_per_example:
        return (cfg.rank,) * len(layers)
    value_bytes = NUMPY_STORAGE[cfg.dtype].itemsize
    check_budget(layers, cfg.bytes_per_example, value_bytes)  # before the passes, not after
    batches = sample_batches(cfg, examples)
    moments = sample_moments(featurizer, batches)
    spectra = SpectrumSample(moments, cfg.truncation_damping, featurizer.device)
    for batch in batches:
        spectra.add(featurizer.gradients(batch))
    ranks = choose_ranks(layers, spectra.energy(), cfg.bytes_per_example, value_bytes)
    used = sum(c * (t.d1 + t.d2) for c, t in zip(ranks, layers, strict=True)) * value_bytes
    log.info(
        "--bytes-per-example %d: c per layer %s (%d bytes per example)",
        cfg.bytes_per_example, list(ranks), used,
    )  # fmt: skip
    return ranks
