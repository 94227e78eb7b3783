"""A store over shards answers exactly like one store over the same rows: blocks (also across
shard boundaries), rows by global id, the scan, the curvature and resident mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer.config import CurvatureConfig
from indexer.engine.lowrank import compute_curvature
from indexer.engine.scoring import score_store
from indexer.storage.codec import decode_rows
from indexer.storage.concat import ShardedFactorStore
from indexer.storage.resident import ResidentFactorStore
from indexer.storage.store import MemoryFactorStore
from tests.indexer.storage.test_streaming import LAYOUT, random_queries, random_store


def split(store: MemoryFactorStore, sizes: list[int]) -> ShardedFactorStore:
    cuts = np.cumsum([0, *sizes])
    assert cuts[-1] == len(store)
    return ShardedFactorStore(
        [
            MemoryFactorStore(LAYOUT, store.raw[a:b], store.dtype)
            for a, b in zip(cuts[:-1], cuts[1:], strict=True)
        ]
    )


@pytest.mark.parametrize("sizes", [[1000], [300, 300, 400], [1, 998, 1], [512, 488]])
def test_sharded_store_equals_one_store(sizes):
    whole = random_store(1000, "bf16")
    sharded = split(whole, sizes)
    assert len(sharded) == 1000
    np.testing.assert_array_equal(sharded.read(0, 1000), whole.raw)
    np.testing.assert_array_equal(sharded.read(250, 750), whole.raw[250:750])
    np.testing.assert_array_equal(sharded.read(5, 5), whole.raw[5:5])
    ids = np.array([0, 1, 299, 300, 301, 512, 998, 999])
    np.testing.assert_array_equal(sharded.take(ids), whole.raw[ids])
    torch.testing.assert_close(sharded.rows(ids), decode_rows(whole.raw[ids], "bf16"))
    blocks = [(start, rows.clone()) for start, rows in sharded.blocks(128)]  # cross boundaries
    assert [s for s, _ in blocks] == list(range(0, 1000, 128))
    torch.testing.assert_close(torch.cat([r for _, r in blocks]), decode_rows(whole.raw, "bf16"))

    p = random_queries(4)
    ref, got = score_store(whole, p, k=9), score_store(sharded, p, k=9)
    np.testing.assert_array_equal(got.proponent_ids, ref.proponent_ids)
    np.testing.assert_array_equal(got.opponent_ids, ref.opponent_ids)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-6)
    low = score_store(sharded, p, k=9, query_rank=1)  # the exact re-score reads rows by id
    np.testing.assert_array_equal(
        low.proponent_ids, score_store(whole, p, k=9, query_rank=1).proponent_ids
    )
    resident = ResidentFactorStore(sharded, "cpu", chunk_rows=333)
    np.testing.assert_array_equal(resident.read(0, 1000), whole.raw)


def test_curvature_over_shards_equals_one_store():
    whole = random_store(800, "fp32")
    cfg = CurvatureConfig(rank=6)
    ref, got = compute_curvature(whole, cfg), compute_curvature(split(whole, [100, 500, 200]), cfg)
    for name in ref:
        np.testing.assert_allclose(got[name].sigma2, ref[name].sigma2, rtol=1e-6)


def test_shards_must_share_layout_and_dtype():
    with pytest.raises(ValueError, match="at least one"):
        ShardedFactorStore([])
    with pytest.raises(ValueError, match="shard 1"):
        ShardedFactorStore([random_store(5, "bf16"), random_store(5, "fp16")])
