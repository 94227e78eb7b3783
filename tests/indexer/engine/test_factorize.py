"""Rank-c factors: near-optimal truncation of real per-example gradients."""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_factorize import excess_error
from indexer.data import Example
from indexer.engine.factorize import factorize
from indexer.models.featurizer import Featurizer
from indexer.models.tasks import CausalLMTask
from tests.helpers import make_model


@pytest.mark.parametrize("c", [1, 2, 4])
def test_rank_c_factors_near_optimal_on_real_gradients(tokenizer, corpus, c):
    feat = Featurizer.create(
        make_model("llama", tokenizer), CausalLMTask(tokenizer), d1=16, d2=24, layer_globs=["*mlp*"]
    )
    grads = feat.gradients([Example(completion=t) for t in corpus[:16]])
    worst = {}
    for method in ("power", "svd"):
        worst[method] = max(
            float(excess_error(g, *factorize(g, c, method)).max()) for g in grads.values()
        )
    assert worst["svd"] < 1e-5, worst
    assert worst["power"] < 1e-3, worst


def test_rank_above_min_dim_is_rejected():
    with pytest.raises(ValueError, match="exceeds"):
        factorize(torch.zeros(2, 3, 5), 4)
