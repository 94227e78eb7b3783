"""The index end to end: full-rank exactness, stored content, info, fingerprint."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest

from indexer.build import build_index
from indexer.config import BuildConfig, CurvatureConfig
from indexer.data import Example, load_examples
from indexer.engine.projection import checksum, layer_projections
from indexer.models.loading import load_causal_lm
from indexer.models.tasks import CausalLMTask
from indexer.query import QueryEngine
from indexer.storage.format import PAGE
from indexer.storage.reader import Index
from lorif_cli.index import info_dict
from tests.reference import dense_influence


def full_rank_config(model_dir, data, out) -> BuildConfig:
    # d1 = d2 = 6 on every layer, c = 6 = min(d1, d2), r = 36 = D, fp32 storage.
    return BuildConfig(
        model=str(model_dir),
        data=str(data),
        output=str(out),
        d1=6,
        d2=6,
        rank=6,
        curvature=CurvatureConfig(rank=36),
        dtype="fp32",
        batch_size=5,
        seed=7,
        max_tokens=48,
    )


def test_full_rank_limit_equals_dense_damped_influence(arch, model_dirs, data_jsonl, tmp_path):
    cfg = full_rank_config(model_dirs[arch], data_jsonl, tmp_path / "full.h5")
    _assert_equals_dense(cfg, model_dirs[arch], data_jsonl)


def test_whitened_truncation_at_full_rank_equals_dense(model_dirs, data_jsonl, tmp_path):
    """``--truncation kfac`` stores other rank-c factors but the same G~ at c = min(d1, d2)."""
    cfg = full_rank_config(model_dirs["llama"], data_jsonl, tmp_path / "full.h5")
    cfg = replace(cfg, truncation="kfac", truncation_sample=7)
    _assert_equals_dense(cfg, model_dirs["llama"], data_jsonl)
    with Index(cfg.output) as index:
        assert BuildConfig.from_dict(index.manifest.build_config).truncation == "kfac"


def test_a_storage_budget_chooses_c_per_layer(model_dirs, data_jsonl, tmp_path):
    """``--bytes-per-example``: c chosen per layer within the budget, recorded per layer, and
    the index scores exactly what dense influence does on gradients truncated to those c."""
    cfg = full_rank_config(model_dirs["llama"], data_jsonl, tmp_path / "budget.h5")
    layers = 14  # the tiny Llama's tracked layers, d1 = d2 = 6: c = 1 costs 12 * 4 bytes
    budget = 2 * layers * 48 + 5 * 48 + 20  # c = 2 on average, five more factors, a remainder
    cfg = replace(cfg, bytes_per_example=budget, truncation_sample=9)
    ranks = _assert_equals_dense(cfg, model_dirs["llama"], data_jsonl)
    assert len(ranks) == layers and len(set(ranks.values())) > 1, ranks
    d = info_dict(cfg.output)
    assert d["bytes_per_example"] == sum(ranks.values()) * 48 == budget - 20
    assert [x["c"] for x in d["layers"]] == list(ranks.values())
    assert d["rank_c"] == max(ranks.values()) and d["bytes_budget"] == budget


def _assert_equals_dense(cfg: BuildConfig, model_dir, data_jsonl) -> dict[str, int]:
    """Build ``cfg`` and compare its scores with dense influence (at the index's c per layer:
    exact when c = min(d1, d2)); returns {layer: c}."""
    build_index(cfg, progress=False)
    loaded = load_causal_lm(str(model_dir))
    task = CausalLMTask(loaded.tokenizer, max_tokens=48)
    train = load_examples(data_jsonl)
    queries = [
        train[3],
        Example(prompt="the king ", completion="loves the sea and the moon."),
        Example(completion="storm night crown fool gold."),
    ]
    with Index(cfg.output) as index:
        engine = QueryEngine.attach(index, loaded.model, task)
        got = engine.score(queries, k=5).scores
        lambdas = {n: c.lam for n, c in index.curvature().items()}
        assert all(len(c.sigma2) == 36 for c in index.curvature().values())
        ranks = index.layout.ranks_by_name
    featurizer = engine.featurizer
    want = dense_influence(loaded.model, task, featurizer, train, queries, lambdas, ranks)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-4, err
    # the training example used as a query is its own top proponent
    assert int(np.argmax(got[0])) == 3
    return ranks


def test_layout_text_and_metadata(small_index, data_jsonl):
    rows = [json.loads(line) for line in data_jsonl.read_text().splitlines()]
    with Index(small_index) as index:
        f = index.file
        assert f["factors"].id.get_offset() % PAGE == 0
        assert f["factors"].chunks is None and f["factors"].compression is None
        assert f["factors"].dtype == np.uint16  # bf16 bit patterns
        assert len(index) == len(rows)
        for i in (0, 1, 59):
            ex = index.example(i)
            assert ex.text == rows[i].get(
                "text", rows[i].get("prompt", "") + rows[i].get("completion", "")
            )
            assert ex.meta["n"] == i and ex.meta["source"] == rows[i]["source"]
        assert f["examples/n_tokens"][()].min() >= 2
        m = index.manifest
        assert m.software["torch"] and m.model["fingerprint"]
        assert BuildConfig.from_dict(m.build_config).rank == 2
        # projections are stored (small) and equal what the generator produces
        stored = index.stored_projections()
        assert stored is not None and len(stored) == len(m.layers)
        for d in m.layers:
            want = layer_projections(m.projection_seed, d.name, d.in_dim, d.out_dim, d.d1, d.d2)
            sums = (d.proj_in_sha256, d.proj_out_sha256)
            for got, expect, key, sha in zip(
                stored[d.name], want, ("in", "out"), sums, strict=True
            ):
                assert np.array_equal(got, expect), (d.name, key)
                assert checksum(got) == sha


def test_info_bytes_per_example(small_index):
    """c * sum(d1 + d2) * 2 bytes (bf16) per example, and the file's factor dataset holds
    exactly that much: no padding, no chunk overhead."""
    d = info_dict(str(small_index))
    c = d["rank_c"]
    expected = c * sum(x["d1"] + x["d2"] for x in d["layers"]) * 2  # bf16
    assert d["bytes_per_example"] == expected
    with h5py.File(small_index, "r") as f:
        real = f["factors"].id.get_storage_size()
        assert f["factors"].nbytes == real == expected * d["n_examples"]
    assert d["stored_bytes_per_example"] == real / d["n_examples"] == expected
    assert d["dense_bytes_per_example"] == sum(x["D"] for x in d["layers"]) * 2
    assert d["dense_ratio"] == round(d["dense_bytes_per_example"] / expected, 2)
    assert d["file_bytes"] >= real


def test_scores_bf16_close_to_fp32(model_dirs, data_jsonl, tmp_path, small_index):
    cfg = BuildConfig(
        model=str(model_dirs["llama"]),
        data=str(data_jsonl),
        output=str(tmp_path / "fp32.h5"),
        proj_factor=4,
        rank=2,
        curvature=CurvatureConfig(rank=16),
        batch_size=8,
        dtype="fp32",
    )
    build_index(cfg, progress=False)
    q = [Example(completion="the queen and the sea.")]
    a = QueryEngine.open(str(small_index), device="cpu")
    b = QueryEngine.open(cfg.output, device="cpu")
    try:
        sa, sb = a.score(q).scores, b.score(q).scores
    finally:
        a.close()
        b.close()
    assert np.corrcoef(sa[0], sb[0])[0, 1] > 0.99


def test_generic_model_mlp_classifier_full_rank(tmp_path):
    """Python entry point for a non-LM model: an MLP classifier, exact in the full-rank limit."""
    import torch

    from indexer.models.featurizer import Featurizer
    from indexer.models.tasks import ClassificationTask

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(12, 10), torch.nn.Tanh(), torch.nn.Linear(10, 4))
    task = ClassificationTask()
    feat = Featurizer.create(mlp, task, d1=4, d2=4, seed=1)
    x = torch.randn(50, 12)
    train = [
        Example(completion=f"point {i}", inputs=x[i], meta={"label": i % 4}) for i in range(50)
    ]
    cfg = BuildConfig(
        model="mlp",
        data="memory",
        output=str(tmp_path / "mlp.h5"),
        d1=4,
        d2=4,
        rank=4,
        curvature=CurvatureConfig(rank=16),
        dtype="fp32",
        seed=1,
    )
    build_index(
        cfg,
        featurizer=feat,
        examples=train,
        model_info={"name": "mlp-12-10-4"},
        task_info={"kind": "classification"},
        progress=False,
    )
    queries = [Example(completion="q", inputs=torch.randn(12), meta={"label": 2})]
    with Index(cfg.output) as index:
        assert index.example(7).meta == {"label": 3}
        engine = QueryEngine.attach(index, mlp, task)
        got = engine.score(queries).scores
        lambdas = {n: c.lam for n, c in index.curvature().items()}
    want = dense_influence(mlp, task, engine.featurizer, train, queries, lambdas)
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


def test_concurrent_build_of_same_output_is_refused(model_dirs, data_jsonl, tmp_path):
    import fcntl

    from indexer.errors import ConfigError

    out = tmp_path / "locked.h5"
    with open(str(out) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another build is writing"):
            build_index(
                BuildConfig(model=str(model_dirs["llama"]), data=str(data_jsonl), output=str(out)),
                progress=False,
            )
    assert not out.exists()
