"""Builds with ``--curvature kfac | ekfac`` (issue 17): the stored preconditioner is the one
the moments of every training token and the stored rows define (the math itself is checked
against the explicit Kronecker matrix in engine/test_kronecker.py); each shard keeps its own
moments, so an interrupted build, an index grown by `index add` and a build on two torchrun
processes all equal one straight build; query-time damping and explanations work on it."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from indexer import CurvatureConfig, Example, Index, QueryEngine, build_index
from indexer.build import add_examples
from indexer.config import BuildConfig
from indexer.data import load_examples
from indexer.engine.kronecker import (
    KroneckerMoments,
    KroneckerPreconditioner,
    ekfac_eigenvalues,
    kfac,
)
from indexer.errors import ConfigError, IndexFormatError
from indexer.models.featurizer import Featurizer
from indexer.models.loading import load_causal_lm
from indexer.models.tasks import CausalLMTask
from tests.conftest import small_config
from tests.helpers import assert_one_error_line, run_cli

from .test_distributed import ENV, TORCHRUN

QUERIES = [Example(completion="the king loves the sea."), Example(completion="a storm at night.")]


def kron_config(model_dirs, data, out: Path, kind: str = "ekfac", **over) -> BuildConfig:
    cfg = small_config(model_dirs, data, out, 16)
    return replace(cfg, curvature=CurvatureConfig(kind=kind), **over)


@pytest.fixture(scope="module")
def ekfac_index(model_dirs, data_jsonl, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kron") / "ekfac"
    return build_index(kron_config(model_dirs, data_jsonl, out), progress=False)


def reference(index: Index, kind: str, alpha: float = 0.1) -> dict[str, KroneckerPreconditioner]:
    """The preconditioner recomputed here: moments of every example in one sum (the model run
    again, batches of 5), K-FAC eigenbases, EK-FAC eigenvalues over the index's rows."""
    cfg = BuildConfig.from_dict(index.manifest.build_config)
    loaded = load_causal_lm(cfg.model, torch.device("cpu"))
    task = CausalLMTask(loaded.tokenizer, cfg.max_tokens)
    feat = Featurizer.create(loaded.model, task, proj_factor=cfg.proj_factor, seed=cfg.seed)
    examples = load_examples(cfg.data, cfg.limit)
    moments = KroneckerMoments()
    for s in range(0, len(examples), 5):
        feat.gradients(examples[s : s + 5], moments=moments)
    bases = {t.name: kfac(moments.A[t.name], moments.S[t.name]) for t in index.layout.layers}
    if kind == "ekfac":
        bases = ekfac_eigenvalues(index.store(), bases)
    return {n: KroneckerPreconditioner.from_layer(b, alpha) for n, b in bases.items()}


def assert_same_operator(got, want) -> None:
    """Two preconditioners per layer agree on random inputs (eigenvector signs may differ)."""
    assert got.keys() == want.keys()
    for name in want:
        d1, d2 = want[name].inverse.shape
        q = torch.randn(4, d1, d2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        a, b = got[name].apply(q), want[name].apply(q)
        assert np.isclose(got[name].lam, want[name].lam, rtol=1e-4), name
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-4 * float(b.abs().max()))


def engine_preconditioners(path: Path, damping: float | None = None):
    engine = QueryEngine.open(path, device="cpu")
    try:
        return engine.preconditioners_for(damping), engine.score(QUERIES, k=5, damping=damping)
    finally:
        engine.close()


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_the_built_preconditioner_is_the_reference(
    kind, ekfac_index, model_dirs, data_jsonl, tmp_path
):
    path = (
        ekfac_index
        if kind == "ekfac"
        else build_index(kron_config(model_dirs, data_jsonl, tmp_path / kind, kind), progress=False)
    )
    with Index(path) as index:
        assert index.curvature_kind == kind and index.manifest.curvature_kind == kind
        assert len(index.parts) == 4  # 60 examples, shards of 16
        want = reference(index, kind)
        index.verify("full")
    pre, result = engine_preconditioners(path)
    assert_same_operator(pre, want)
    assert result.scores is not None and np.isfinite(result.scores).all()


def test_query_time_damping_on_a_kronecker_index(ekfac_index):
    with Index(ekfac_index) as index:
        want = reference(index, "ekfac", alpha=0.4)
    pre, damped = engine_preconditioners(ekfac_index, 0.4)
    assert_same_operator(pre, want)
    _, same = engine_preconditioners(ekfac_index, 0.1)  # the build's alpha
    _, built = engine_preconditioners(ekfac_index)
    assert np.array_equal(same.scores, built.scores)
    assert not np.allclose(damped.scores, built.scores, rtol=1e-3)


def test_each_shard_keeps_the_moments_of_its_rows(ekfac_index):
    with Index(ekfac_index) as index:
        parts = [p.path for p in index.parts]
        total = index.moments()
    with h5py.File(parts[0], "r") as f:
        assert "moments" in f and f["moments"].attrs["checksum"]
    some = next(iter(total.A))
    assert torch.allclose(total.A[some], total.A[some].T)  # a sum of x x^T
    copy = parts[1].with_name("copy.h5")
    copy.write_bytes(parts[1].read_bytes())
    with h5py.File(copy, "r+") as f:
        f[f"moments/{some}/A"][0, 0] += 1.0
    from indexer.storage.moments import read_moments

    with pytest.raises(IndexFormatError, match="moments do not match their checksum"):
        read_moments([copy])
    copy.unlink()


def test_interrupted_build_resumes_to_the_straight_build(
    ekfac_index, model_dirs, data_jsonl, tmp_path, monkeypatch
):
    cfg = kron_config(model_dirs, data_jsonl, tmp_path / "resumed")
    real, calls = Featurizer.gradients, []

    def failing(self, examples, moments=None):
        calls.append(len(examples))
        if len(calls) == 6:  # shards 0 and 1 finished (2 batches each), shard 2 half written
            raise KeyboardInterrupt
        return real(self, examples, moments=moments)

    monkeypatch.setattr(Featurizer, "gradients", failing)
    with pytest.raises(KeyboardInterrupt):
        build_index(cfg, progress=False)
    monkeypatch.setattr(Featurizer, "gradients", real)
    assert sorted(p.name for p in (tmp_path / "resumed" / "shards").glob("*.h5")) == [
        "00000.h5",
        "00001.h5",
    ]
    build_index(cfg, progress=False)
    with Index(tmp_path / "resumed") as index:
        assert index.manifest.build_info["resumed_rows"] == 32  # shard 2 recomputed whole
    assert_same_operator(engine_preconditioners(tmp_path / "resumed")[0],
                         engine_preconditioners(ekfac_index)[0])  # fmt: skip


def test_add_then_refresh_equals_the_straight_build(ekfac_index, model_dirs, data_jsonl, tmp_path):
    rows = [line for line in data_jsonl.read_text().splitlines() if line.strip()]
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    first.write_text("\n".join(rows[:32]) + "\n")
    rest.write_text("\n".join(rows[32:]) + "\n")
    cfg = kron_config(model_dirs, first, tmp_path / "grown")
    build_index(cfg, progress=False)
    add_examples(tmp_path / "grown", str(rest), device="cpu", progress=False)
    got, want = engine_preconditioners(tmp_path / "grown"), engine_preconditioners(ekfac_index)
    assert_same_operator(got[0], want[0])
    np.testing.assert_allclose(got[1].scores, want[1].scores, rtol=1e-3)


def test_two_torchrun_processes_build_the_same_preconditioner(
    ekfac_index, model_dirs, data_jsonl, tmp_path
):
    cfg = kron_config(model_dirs, data_jsonl, tmp_path / "two")
    flags = {
        "model": cfg.model,
        "data": cfg.data,
        "output": cfg.output,
        "shard-size": 16,
        "proj-factor": cfg.proj_factor,
        "rank": cfg.rank,
        "batch-size": cfg.batch_size,
        "curvature": "ekfac",
    }
    args = [*TORCHRUN, "-m", "lorif_cli.main", "index", "build"]
    args += [x for k, v in flags.items() for x in (f"--{k}", str(v))]
    res = subprocess.run(args, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    with Index(tmp_path / "two") as index:
        assert index.manifest.build_info["processes"] == 2
    got, want = engine_preconditioners(tmp_path / "two"), engine_preconditioners(ekfac_index)
    assert_same_operator(got[0], want[0])
    np.testing.assert_allclose(got[1].scores, want[1].scores, rtol=1e-3)


def test_explanations_split_the_kronecker_score(ekfac_index):
    engine = QueryEngine.open(ekfac_index, device="cpu")
    try:
        result = engine.score(QUERIES[:1], k=3)
        top = int(result.proponent_ids[0, 0])
        e = engine.explain(QUERIES[0], top)
    finally:
        engine.close()
    assert np.isclose(e.score, sum(t.contribution for t in e.example_tokens), rtol=1e-6)
    assert np.isclose(e.score, e.index_score, rtol=2e-2)  # bf16 rows vs float64 recompute


def test_a_single_file_kronecker_build_is_refused_in_one_line(
    model_dirs, data_jsonl, tmp_path, monkeypatch, capsys
):
    with pytest.raises(ConfigError, match="needs --shard-size"):
        kron_config(model_dirs, data_jsonl, tmp_path / "x.h5", shard_size=0).validate()
    code, _, err = run_cli(
        monkeypatch, capsys, "index", "build", "--model", str(model_dirs["llama"]),
        "--data", str(data_jsonl), "--output", str(tmp_path / "x.h5"), "--shard-size", "0",
        "--curvature", "kfac",
    )  # fmt: skip
    assert_one_error_line(code, err, "needs --shard-size")
