"""The scan: the low-rank query path against the exact one (random factor rows in memory)."""

from __future__ import annotations

import numpy as np
import torch

from indexer.engine.scoring import LowRankQueries, score_rows, score_rows_lowrank, score_store
from indexer.storage.codec import decode_rows as decode
from tests.indexer.storage.test_streaming import LAYOUT, random_queries, random_store


def test_lowrank_at_full_rank_equals_exact():
    store, p = random_store(300, "fp32"), random_queries(3)
    rows = decode(store.read(0, 300), "fp32")
    full = LowRankQueries.factor(p, rank=min(min(t.d1, t.d2) for t in LAYOUT.layers) + 10)
    assert np.abs(full.residual).max() < 1e-3
    exact, approx = score_rows(LAYOUT, rows, p), score_rows_lowrank(LAYOUT, rows, full)
    assert torch.allclose(approx, exact, rtol=1e-4, atol=1e-4 * exact.abs().max().item())


def test_lowrank_path_returns_exact_scores_of_its_candidates():
    store, p = random_store(500, "fp32"), random_queries(4)
    exact = score_store(store, p, k=10, block_rows=64)
    fast = score_store(store, p, k=10, block_rows=64, query_rank=1, candidates=4)
    assert fast.residual is not None and ((fast.residual > 0) & (fast.residual < 1)).all()
    for q in range(4):  # every returned score is the exact score of the returned id
        np.testing.assert_allclose(
            fast.proponent_scores[q], exact.scores[q, fast.proponent_ids[q]], rtol=1e-5
        )
        np.testing.assert_allclose(
            fast.opponent_scores[q], exact.scores[q, fast.opponent_ids[q]], rtol=1e-5
        )
        assert (np.diff(fast.proponent_scores[q]) <= 0).all()
    # candidates covering the whole store make the fast path exact
    wide = score_store(store, p, k=10, block_rows=64, query_rank=1, candidates=50)
    np.testing.assert_array_equal(wide.proponent_ids, exact.proponent_ids)
    np.testing.assert_array_equal(wide.opponent_ids, exact.opponent_ids)
