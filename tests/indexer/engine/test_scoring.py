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


def test_grouped_layers_score_like_one_layer_at_a_time():
    """The CUDA path (same-shape layers stacked, one batched GEMM per shape) against the
    per-layer path, on a layout with repeated and distinct shapes, c = 1 and c = 3."""
    from indexer.engine.kernels import layer_groups
    from indexer.engine.layout import FactorLayout, TrackedLayer

    for c in (1, 3):
        shapes = [(6, 5), (4, 7), (6, 5), (6, 5), (4, 7), (3, 3)]
        layout = FactorLayout(
            tuple(TrackedLayer(f"l{i}", 9, 9, d1, d2) for i, (d1, d2) in enumerate(shapes)), c
        )
        assert [len(g.layers) for g in layer_groups(layout, "cpu")] == [3, 2, 1]
        gen = torch.Generator().manual_seed(c)
        rows = torch.randn(700, layout.width, generator=gen)
        p = {t.name: torch.randn(5, t.d1, t.d2, generator=gen) for t in layout.layers}
        per_layer = score_rows(layout, rows, p, grouped=False)
        grouped = score_rows(layout, rows, p, grouped=True)
        assert grouped.shape == (5, 700)
        torch.testing.assert_close(grouped, per_layer, rtol=1e-5, atol=1e-4)
        lr = LowRankQueries.factor(p, rank=2)
        torch.testing.assert_close(
            score_rows_lowrank(layout, rows, lr, grouped=True),
            score_rows_lowrank(layout, rows, lr, grouped=False),
            rtol=1e-5,
            atol=1e-4,
        )
