"""Block reader (reader thread + ring of reused buffers) and the low-rank query path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from indexer.engine.layout import FactorLayout, TrackedLayer
from indexer.engine.scoring import LowRankQueries, score_rows, score_rows_lowrank, score_store
from indexer.storage.codec import decode_rows as decode
from indexer.storage.store import MemoryFactorStore
from indexer.storage.streaming import BlockReader, iter_blocks

LAYOUT = FactorLayout((TrackedLayer("a", 12, 10, 6, 5), TrackedLayer("b", 20, 8, 7, 4)), rank=2)


def random_store(n: int, dtype: str, seed: int = 0) -> MemoryFactorStore:
    gen = torch.Generator().manual_seed(seed)
    return MemoryFactorStore.from_float(LAYOUT, torch.randn(n, LAYOUT.width, generator=gen), dtype)


def random_queries(q: int, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {t.name: torch.randn(q, t.d1, t.d2, generator=gen) for t in LAYOUT.layers}


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("block_rows", [1, 7, 64, 1000])
def test_reader_yields_every_row_once_in_order(dtype, block_rows):
    store = random_store(101, dtype)
    seen = []
    for start, rows in BlockReader(store, block_rows, depth=2):
        expect = decode(store.read(start, start + rows.shape[0]), dtype)
        assert rows.dtype == torch.float32 and torch.equal(rows, expect)
        seen.append((start, rows.shape[0]))
    assert [s for s, _ in seen] == list(range(0, 101, min(block_rows, 101)))
    assert sum(n for _, n in seen) == 101


def test_reader_reuses_its_buffers_and_copies_survive():
    store = random_store(50, "fp32")
    blocks = [rows.clone() for _, rows in iter_blocks(store, 5, depth=2)]  # 10 blocks, 2 buffers
    assert torch.equal(torch.cat(blocks), decode(store.read(0, 50), "fp32"))
    reader = BlockReader(store, 5, depth=2)
    pointers = {rows.data_ptr() for _, rows in reader}
    assert len(pointers) <= 2  # no block allocates: the ring is reused


def test_reader_stops_its_thread_on_early_exit_and_reraises_read_errors():
    store = random_store(100, "bf16")
    before = threading.active_count()
    for start, _ in iter_blocks(store, 10):
        if start >= 20:
            break
    assert threading.active_count() == before

    class Broken(MemoryFactorStore):
        def read(self, start, stop):
            if start >= 30:
                raise OSError("disk gone")
            return super().read(start, stop)

    broken = Broken(store.layout, store.raw, store.dtype)
    with pytest.raises(OSError, match="disk gone"):
        for _ in iter_blocks(broken, 10):
            pass
    assert threading.active_count() == before
    assert list(iter_blocks(random_store(0, "bf16"), 10)) == []


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
