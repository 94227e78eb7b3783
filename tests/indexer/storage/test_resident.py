"""Resident mode on CPU (the same code runs on CUDA in tests/test_gpu.py): every row held in
device memory in its storage dtype, packed by layer shape; answers equal the streamed scan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer.engine.scoring import score_store
from indexer.query import QueryEngine
from indexer.storage.codec import decode_rows
from indexer.storage.resident import ResidentFactorStore, make_resident
from tests.indexer.storage.test_streaming import random_queries, random_store


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_resident_rows_blocks_and_scores_equal_the_streamed_store(dtype):
    store = random_store(1003, dtype)
    resident = ResidentFactorStore(store, "cpu", chunk_rows=100)  # several loading chunks
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)
    assert all(left.dtype == right.dtype == want for _, left, right in resident.packs)
    assert [tuple(left.shape) for _, left, _ in resident.packs] == [
        (1, 1003, 2, 6),
        (1, 1003, 2, 7),
    ]
    everything = decode_rows(store.read(0, len(store)), dtype)
    blocks = list(resident.blocks(64))
    assert [start for start, _ in blocks] == [0]  # at least RESIDENT_BLOCK_ROWS per block
    torch.testing.assert_close(blocks[0][1], everything, rtol=0, atol=0)
    ids = np.array([0, 5, 17, 1002])
    torch.testing.assert_close(resident.rows(ids), everything[ids], rtol=0, atol=0)
    np.testing.assert_array_equal(resident.take(ids), store.take(ids))
    np.testing.assert_array_equal(resident.read(3, 9), store.read(3, 9))

    p = random_queries(5)
    streamed = score_store(store, p, k=7, block_rows=128)
    held = score_store(resident, p, k=7, block_rows=128)
    np.testing.assert_array_equal(held.proponent_ids, streamed.proponent_ids)
    np.testing.assert_array_equal(held.opponent_ids, streamed.opponent_ids)
    np.testing.assert_allclose(held.scores, streamed.scores, rtol=1e-5, atol=1e-5)
    fast = score_store(store, p, k=7, block_rows=128, query_rank=2)  # the low-rank path
    held_fast = score_store(resident, p, k=7, block_rows=128, query_rank=2)
    np.testing.assert_array_equal(held_fast.proponent_ids, fast.proponent_ids)
    np.testing.assert_allclose(held_fast.scores, fast.scores, rtol=1e-5, atol=1e-5)


def test_auto_streams_on_cpu_and_on_keeps_rows_resident():
    store = random_store(50, "bf16")
    cpu = torch.device("cpu")
    assert make_resident(store, cpu, "off") is store
    assert make_resident(store, cpu, "auto") is store  # the page cache already holds them
    assert isinstance(make_resident(store, cpu, "on"), ResidentFactorStore)
    with pytest.raises(ValueError, match="resident on cpu"):
        next(iter(ResidentFactorStore(store, cpu).blocks(10, "meta")))


def test_query_engine_resident_on_equals_streamed(small_index):
    from indexer import Example

    queries = [Example(completion="the king and the queen."), Example(completion="storm night.")]
    results = []
    for mode in ("off", "on"):
        engine = QueryEngine.open(str(small_index), device="cpu", resident=mode)
        assert isinstance(engine.store, ResidentFactorStore) == (mode == "on")
        results.append(engine.score(queries, k=5))
        engine.close()
    off, on = results
    np.testing.assert_array_equal(on.proponent_ids, off.proponent_ids)
    np.testing.assert_allclose(on.scores, off.scores, rtol=1e-5, atol=1e-6)
