"""Projected per-example gradients equal P_in^T (autograd per-example weight gradient)^T P_out."""

from __future__ import annotations

import pytest
import torch

from indexer.data import Example
from indexer.engine.capture import select_layers
from indexer.models.featurizer import Featurizer
from indexer.models.tasks import CausalLMTask, ClassificationTask
from tests.helpers import make_model
from tests.reference import autograd_projected, rel


def mixed_batch(corpus) -> list[Example]:
    """Mixed lengths; some prompt/completion pairs (only completion tokens count)."""
    out = []
    for i, text in enumerate(corpus[:7]):
        words = text.split()
        if i % 2:
            out.append(Example(prompt=" ".join(words[:2]) + " ", completion=" ".join(words[2:])))
        else:
            out.append(Example(completion=text))
    return out


def test_projected_gradients_match_autograd(arch, tokenizer, corpus):
    model = make_model(arch, tokenizer)
    task = CausalLMTask(tokenizer, max_tokens=64)
    feat = Featurizer.create(model, task, proj_factor=4, seed=3)
    examples = mixed_batch(corpus)
    assert len({task.length(e) for e in examples}) > 3, "batch must mix lengths (padding)"
    got = feat.gradients(examples)
    assert all(p.requires_grad for p in model.parameters())  # restored afterwards
    assert all(p.grad is None for p in model.parameters()), "no weight gradient may be built"
    worst = 0.0
    for b, ex in enumerate(examples):
        ref = autograd_projected(model, task, feat, ex)
        for name in ref:
            worst = max(worst, rel(got[name][b], ref[name]))
    assert worst < 1e-5, worst


def test_loss_mask_excludes_prompt_tokens(tokenizer, corpus):
    model = make_model("llama", tokenizer)
    task = CausalLMTask(tokenizer, max_tokens=64)
    feat = Featurizer.create(model, task, proj_factor=4)
    words = corpus[0].split()
    pair = Example(prompt=" ".join(words[:4]) + " ", completion=" ".join(words[4:]))
    plain = Example(completion=pair.text)
    ids, mask = task.encode(pair)
    assert sum(mask) == len(task.encode(Example(completion=pair.completion))[0]) - 1
    g_pair, g_plain = feat.gradients([pair]), feat.gradients([plain])
    name = feat.layers[0].name
    assert rel(g_pair[name], g_plain[name]) > 1e-3  # prompt tokens changed the gradient


def test_padding_contributes_exactly_zero(tokenizer, corpus):
    model = make_model("llama", tokenizer)
    task = CausalLMTask(tokenizer, max_tokens=64)
    feat = Featurizer.create(model, task, proj_factor=4)
    short, long = Example(completion=corpus[1][:20]), Example(completion=corpus[2])
    alone = feat.gradients([short])
    padded = feat.gradients([short, long])
    for name in alone:
        assert rel(padded[name][0], alone[name][0]) < 1e-6


def test_default_layers_skip_embeddings_and_head(arch, tokenizer):
    model = make_model(arch, tokenizer)
    names = [n for n, _ in select_layers(model, [])]
    assert names and all(".0." in n or ".1." in n for n in names)
    assert not any("lm_head" in n or "wte" in n or "embed" in n for n in names)
    expected = 14 if arch == "llama" else 8  # 7 linears per Llama block, 4 Conv1D per GPT-2 block
    assert len(names) == expected


def test_generic_entry_point_mlp_classifier():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    task = ClassificationTask()
    feat = Featurizer.create(mlp, task, proj_factor=2)
    assert [t.name for t in feat.layers] == ["0", "2"]
    examples = [
        Example(completion=f"x{i}", inputs=torch.randn(8), meta={"label": i % 3}) for i in range(5)
    ]
    got = feat.gradients(examples)
    for b, ex in enumerate(examples):
        ref = autograd_projected(mlp, task, feat, ex)
        for name in ref:
            assert rel(got[name][b], ref[name]) < 1e-5


def test_layer_glob_matching_nothing_is_an_error(tokenizer):
    from indexer.errors import ConfigError

    with pytest.raises(ConfigError, match="match no Linear"):
        select_layers(make_model("llama", tokenizer), ["*nope*"])


def test_kronecker_moments_are_the_token_level_sums(tokenizer, corpus):
    """The K-FAC moments summed during featurizing = sum over real tokens of x~ x~^T and
    d~ d~^T (from each example's per-position terms); padding adds nothing."""
    from indexer.engine.kronecker import KroneckerMoments

    model = make_model("llama", tokenizer)
    task = CausalLMTask(tokenizer, max_tokens=64)
    feat = Featurizer.create(model, task, proj_factor=4, seed=1)
    examples = [Example(completion=corpus[1][:30]), Example(completion=corpus[2])]
    moments = KroneckerMoments()
    feat.gradients(examples, moments=moments)
    for t in feat.layers:
        want_a = torch.zeros(t.d1, t.d1, dtype=torch.float64)
        want_s = torch.zeros(t.d2, t.d2, dtype=torch.float64)
        for ex in examples:
            a, d = feat.position_terms(ex)[t.name]
            want_a += a.double().T @ a.double()
            want_s += d.double().T @ d.double()
        assert rel(moments.A[t.name], want_a) < 1e-5, t.name
        assert rel(moments.S[t.name], want_s) < 1e-5, t.name
