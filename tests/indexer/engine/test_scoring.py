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
    per-layer path, on a layout with repeated and distinct shapes, c = 1, c = 3 and c per layer."""
    from indexer.engine.kernels import layer_groups
    from indexer.engine.layout import FactorLayout, TrackedLayer

    shapes = [(6, 5), (4, 7), (6, 5), (6, 5), (4, 7), (3, 3)]
    layers = tuple(TrackedLayer(f"l{i}", 9, 9, d1, d2) for i, (d1, d2) in enumerate(shapes))
    for c, sizes in (
        ((1,) * 6, [3, 2, 1]),
        ((3,) * 6, [3, 2, 1]),
        ((1, 3, 2, 1, 3, 2), [2, 2, 1, 1]),
    ):
        layout = FactorLayout(layers, c)
        assert [len(g.layers) for g in layer_groups(layout, "cpu")] == sizes
        gen = torch.Generator().manual_seed(sum(c))
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


def test_per_layer_ranks_score_the_dense_products_of_their_factors():
    """A storage budget's layout (c per layer): rows packed from random factors score
    sum_l <L_l R_l^T, P_l> on every path (per layer, grouped, the store's scan, the low-rank
    path's exact re-score)."""
    from indexer.engine.layout import FactorLayout, TrackedLayer
    from indexer.storage.store import MemoryFactorStore

    shapes, ranks = [(6, 5), (6, 5), (4, 7), (3, 3)], (1, 4, 2, 3)
    layers = tuple(TrackedLayer(f"l{i}", 9, 9, d1, d2) for i, (d1, d2) in enumerate(shapes))
    layout = FactorLayout(layers, ranks)
    gen = torch.Generator().manual_seed(7)
    factors = {
        t.name: (torch.randn(60, t.d1, c, generator=gen), torch.randn(60, t.d2, c, generator=gen))
        for t, c in zip(layers, ranks, strict=True)
    }
    p = {t.name: torch.randn(3, t.d1, t.d2, generator=gen) for t in layers}
    dense = sum(
        torch.einsum("bij,qij->qb", left @ right.mT, p[name])
        for name, (left, right) in factors.items()
    )
    rows = layout.pack(factors)
    assert rows.shape == (60, sum(c * (d1 + d2) for (d1, d2), c in zip(shapes, ranks, strict=True)))
    for grouped in (False, True):
        torch.testing.assert_close(score_rows(layout, rows, p, grouped=grouped), dense)
    store = MemoryFactorStore.from_float(layout, rows, "fp32")
    scan = score_store(store, p, k=5, keep_scores=True, block_rows=16)
    torch.testing.assert_close(torch.from_numpy(scan.scores), dense, rtol=1e-5, atol=1e-4)
    fast = score_store(store, p, k=5, block_rows=16, query_rank=1, candidates=60)
    np.testing.assert_array_equal(fast.proponent_ids, scan.proponent_ids)
    np.testing.assert_allclose(fast.proponent_scores, scan.proponent_scores, rtol=1e-5)
