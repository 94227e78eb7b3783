"""--batch-tokens: batches by a token budget (similar lengths together), the same index."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from indexer import Example, QueryEngine, build_index
from indexer.build.steps import by_tokens
from tests.conftest import small_config


def test_batches_fit_the_budget_and_keep_every_row_once():
    lengths = np.array([9, 3, 20, 3, 5, 4, 9, 2], dtype=np.int64)
    rows = np.argsort(lengths, kind="stable")
    batches = by_tokens(rows, lengths, budget=10)
    assert [lengths[b].tolist() for b in batches] == [[2, 3, 3], [4, 5], [9], [9], [20]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 10


def test_a_token_budget_builds_the_same_index(model_dirs, data_jsonl, tmp_path):
    base = small_config(model_dirs, data_jsonl, tmp_path / "by_count.h5", 0)
    by_tokens_cfg = replace(base, output=str(tmp_path / "by_tokens.h5"), batch_tokens=40)
    for cfg in (base, by_tokens_cfg):
        build_index(cfg, progress=False)
    queries = [Example(completion="the king loves the sea."), Example(completion="a storm.")]
    scores = []
    for name in ("by_count.h5", "by_tokens.h5"):
        engine = QueryEngine.open(tmp_path / name, device="cpu")
        scores.append(engine.score(queries, k=5).scores)
        assert engine.index.manifest.build_config["batch_tokens"] == (name == "by_tokens.h5") * 40
        engine.close()
    # the same rows up to the float noise of other batch compositions (bf16 storage)
    scale = np.abs(scores[0]).max()
    np.testing.assert_allclose(scores[1], scores[0], rtol=0, atol=2e-2 * scale)
