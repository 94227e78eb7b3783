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


def test_zero_and_rank_deficient_gradients_give_finite_exact_factors():
    """Cholesky QR on nearly dependent or zero columns: no NaN, exact where the rank is low."""
    g = torch.zeros(3, 20, 30)
    g[1] = torch.outer(torch.arange(20.0), torch.ones(30))  # rank 1
    g[2] = torch.randn(20, 2) @ torch.randn(2, 30)  # rank 2
    for c in (1, 2, 4):
        left, right = factorize(g, c, "power")
        assert torch.isfinite(left).all() and torch.isfinite(right).all()
        assert torch.equal(left[0], torch.zeros_like(left[0]))
        exact = [1, 2] if c >= 2 else [1]  # the examples of rank <= c
        torch.testing.assert_close(left[exact] @ right[exact].mT, g[exact], rtol=1e-4, atol=1e-3)


def test_layers_of_one_shape_factorized_together_equal_one_at_a_time():
    from indexer.engine.factorize import factorize_layers

    gen = torch.Generator().manual_seed(0)
    grads = {
        n: torch.randn(4, d1, d2, generator=gen)
        for n, (d1, d2) in {"a": (12, 20), "b": (12, 20), "c": (8, 20), "d": (12, 20)}.items()
    }
    together = factorize_layers(grads, 2)
    for name, g in grads.items():
        left, right = factorize(g, 2)
        torch.testing.assert_close(together[name][0] @ together[name][1].mT, left @ right.mT)
