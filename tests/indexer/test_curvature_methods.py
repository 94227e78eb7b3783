"""The curvature methods' registry (indexer/curvature): each kind's memory estimate is the basis
it stores; a kind is added by one class and one registration; an unknown one is refused."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from indexer import CurvatureConfig, Example, Index, QueryEngine, build_index
from indexer.config import BuildConfig
from indexer.curvature import KINDS, REGISTRY, method, register
from indexer.curvature.base import Basis
from indexer.curvature.lowrank import LowRank
from indexer.engine.lowrank import LayerCurvature
from indexer.errors import ConfigError, IndexFormatError
from tests.conftest import small_config


class GradDot(LowRank):
    """The toy fourth kind of docs/architecture.md: H = 0, scores g_q . g_i / lambda."""

    kind = "graddot"

    def validate(self, cfg: Any) -> None:
        pass

    def passes(self, cfg: Any) -> int:
        return 0

    def compute(self, store, cfg, device, progress=None, combine=None, moments=None) -> Basis:
        lam = cfg.curvature.damping_abs or cfg.curvature.damping
        no_basis = lambda t: LayerCurvature(np.zeros((t.D, 0), "<f4"), np.zeros(0), lam)  # noqa: E731
        return Basis(self.kind, {t.name: no_basis(t) for t in store.layout.layers})


def stored_bytes(index: Index) -> int:
    return sum(a.nbytes for layer in index.curvature().values() for a in layer.arrays().values())


def test_the_memory_estimate_is_the_stored_basis(small_index, small_sharded_kfac):
    for path in (small_index, small_sharded_kfac):
        with Index(path) as index:
            rank = index.curvature_record.rank
            estimate = method(index.curvature_kind).memory_bytes(index.layout.layers, rank)
            assert estimate == stored_bytes(index) == index.summary()["basis_bytes"] > 0


@pytest.fixture(scope="module")
def small_sharded_kfac(model_dirs, data_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("kfac") / "idx"
    cfg = small_config(model_dirs, data_jsonl, out, 16)
    build_index(replace(cfg, curvature=CurvatureConfig(kind="kfac")), progress=False)
    return out


def test_a_fourth_kind_is_one_class_and_one_registration(model_dirs, data_jsonl, tmp_path):
    register("graddot", f"{__name__}:GradDot")
    try:
        assert "graddot" in KINDS  # a --curvature choice now
        base = small_config(model_dirs, data_jsonl, tmp_path / "g.h5", 0)
        toy = CurvatureConfig(kind="graddot", damping_abs=0.5)
        plain = CurvatureConfig(rank=0, oversample=0, damping_abs=0.5)  # no basis either
        build_index(replace(base, curvature=toy), progress=False)
        build_index(replace(base, output=str(tmp_path / "l.h5"), curvature=plain), progress=False)
        q = [Example(completion="the king loves the sea.")]
        toy_engine = QueryEngine.open(tmp_path / "g.h5", device="cpu")
        low_engine = QueryEngine.open(tmp_path / "l.h5", device="cpu")
        try:
            assert toy_engine.index.curvature_kind == "graddot"
            np.testing.assert_array_equal(toy_engine.score(q).scores, low_engine.score(q).scores)
        finally:
            toy_engine.close()
            low_engine.close()
    finally:
        del REGISTRY["graddot"]
        method.cache_clear()
    with pytest.raises(IndexFormatError, match="unknown curvature kind 'graddot'"):
        Index(tmp_path / "g.h5")  # without the registration it cannot be read


def test_an_unknown_kind_is_refused_in_one_line(tmp_path):
    cfg = BuildConfig(model="m", data="d", curvature=CurvatureConfig(kind="nope"))
    with pytest.raises(ConfigError, match="--curvature must be one of lowrank, kfac, ekfac"):
        cfg.validate()
    with pytest.raises(ConfigError, match="needs --shard-size"):
        replace(cfg, shard_size=0, curvature=CurvatureConfig(kind="ekfac")).validate()
