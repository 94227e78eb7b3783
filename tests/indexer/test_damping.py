"""Damping chosen at query time (issue 17): the build's alpha gives the very same scores; any
other alpha equals an index built with it (the basis does not depend on the damping); an
index built with an absolute lambda refuses it; the CLI's --damping is the engine's."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from indexer import CurvatureConfig, Example, QueryEngine, build_index
from indexer.errors import ConfigError
from tests.conftest import small_config
from tests.helpers import assert_one_error_line, run_cli

QUERIES = [Example(completion="the king loves the sea."), Example(completion="a storm at night.")]


def scores(index, damping=None) -> np.ndarray:
    engine = QueryEngine.open(index, device="cpu")
    try:
        out = engine.score(QUERIES, k=5, keep_scores=True, damping=damping).scores
    finally:
        engine.close()
    assert out is not None
    return out


def built_with(model_dirs, data_jsonl, tmp_path, **curvature) -> str:
    cfg = small_config(model_dirs, data_jsonl, tmp_path / "idx.h5", 0)
    cfg = replace(cfg, curvature=CurvatureConfig(rank=16, **curvature))
    build_index(cfg, progress=False)
    return cfg.output


def test_the_builds_damping_gives_the_same_scores(small_index):
    assert np.array_equal(scores(small_index, 0.1), scores(small_index))


def test_another_damping_equals_a_build_with_it(small_index, model_dirs, data_jsonl, tmp_path):
    other = built_with(model_dirs, data_jsonl, tmp_path, damping=0.4)
    want = scores(other)
    got = scores(small_index, 0.4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert not np.allclose(got, scores(small_index), rtol=1e-3)  # it does change the scores


def test_an_absolute_lambda_index_refuses_a_relative_damping(model_dirs, data_jsonl, tmp_path):
    index = built_with(model_dirs, data_jsonl, tmp_path, damping_abs=0.5)
    with pytest.raises(ConfigError, match="absolute lambda"):
        scores(index, 0.2)
    np.testing.assert_array_equal(scores(index), scores(index, None))


def test_cli_damping(small_index, monkeypatch, capsys):
    code, out, err = run_cli(
        monkeypatch, capsys, "query", str(small_index), "the king loves the sea.",
        "--damping", "0.4", "--json", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    got = [r["example_id"] for r in json.loads(out)["proponents"]]
    engine = QueryEngine.open(small_index, device="cpu")
    try:
        res = engine.score(QUERIES[:1], k=10, keep_scores=False, damping=0.4)
    finally:
        engine.close()
    assert got == [int(i) for i in res.proponent_ids[0]]
    code, _, err = run_cli(monkeypatch, capsys, "query", str(small_index), "x", "--damping", "0")
    assert_one_error_line(code, err, "--damping must be in [1e-06, 1e+06]")
