"""The fused Triton scan kernels (exact and low-rank) against the torch path, run under
TRITON_INTERPRET=1 on CPU (``test_triton_scan.py`` starts it in a process of its own: the
interpreter is chosen when triton's kernels are defined, and it must not slow the rest of the
suite).

    TRITON_INTERPRET=1 python -m tests.indexer.engine.triton_cases
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from indexer.engine.kernels import LowRankQueries, layer_groups, score_rows, score_rows_lowrank
from indexer.engine.layout import FactorLayout, TrackedLayer
from indexer.engine.packed_scan import (
    pack_block,
    score_packs,
    score_packs_lowrank,
    stacked_queries,
)
from indexer.engine.scoring import score_store
from indexer.storage.codec import decode_rows
from indexer.storage.resident import ResidentFactorStore
from indexer.storage.store import MemoryFactorStore

# several shapes, two layers sharing one, dims that are not powers of two
SHAPES = [(8, 12), (24, 40), (8, 12), (16, 16)]


def layout(c: int | tuple[int, ...]) -> FactorLayout:
    """One c for every layer, or one per layer (a storage budget's layout)."""
    layers = [TrackedLayer(f"l{i}", 4 * d1, 4 * d2, d1, d2) for i, (d1, d2) in enumerate(SHAPES)]
    return FactorLayout(tuple(layers), c if isinstance(c, tuple) else (c,) * len(layers))


def case(c: int | tuple[int, ...], nq: int, dtype: str, n: int = 37) -> None:
    lay = layout(c)
    gen = torch.Generator().manual_seed(sum(lay.ranks) * 100 + nq)
    store = MemoryFactorStore.from_float(lay, torch.randn(n, lay.width, generator=gen), dtype)
    p = {t.name: torch.randn(nq, t.d1, t.d2, generator=gen) for t in lay.layers}
    decoded = decode_rows(store.read(0, n), dtype)
    want = score_rows(lay, decoded, p)  # the torch path (per layer)
    groups = layer_groups(lay, "cpu")
    got = score_packs(pack_block(lay, groups, decoded), stacked_queries(groups, p), nq, "triton")
    scale = want.abs().max().item()
    err = (got - want).abs().max().item() / scale
    assert err < 2e-5, (c, nq, dtype, err)
    for rank in (1, 3):  # the low-rank path's kernel
        lr = LowRankQueries.factor(p, rank)
        want_lr = score_rows_lowrank(lay, decoded, lr)
        got_lr = score_packs_lowrank(pack_block(lay, groups, decoded), lr, "triton")
        err_lr = (got_lr - want_lr).abs().max().item() / want_lr.abs().max().item()
        assert err_lr < 2e-5, (c, nq, dtype, rank, err_lr)
    resident = ResidentFactorStore(store, "cpu")  # packed in the storage dtype: no decode
    for query_rank in (0, 2):
        os.environ["LORIF_KERNEL"] = "torch"
        ref = score_store(store, p, k=5, keep_scores=True, block_rows=16, query_rank=query_rank)
        os.environ["LORIF_KERNEL"] = "triton"
        for got_res in (
            score_store(resident, p, k=5, keep_scores=True, query_rank=query_rank),  # packs
            score_store(store, p, k=5, keep_scores=True, block_rows=16, query_rank=query_rank),
        ):
            assert (got_res.proponent_ids == ref.proponent_ids).all(), (c, nq, dtype)
            assert (got_res.opponent_ids == ref.opponent_ids).all(), (c, nq, dtype)
            assert np.abs(got_res.scores - ref.scores).max() / scale < 2e-5
    print(f"ok c={c} Q={nq} {dtype}: max relative error {err:.1e}")


def main() -> int:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    for c in (1, 4):
        for nq in (1, 7, 64):  # one query, a partial query block, several blocks
            case(c, nq, "bf16")
    for dtype in ("fp16", "fp32"):
        case(2, 3, dtype)
    case((1, 3, 2, 1), 7, "bf16")  # per-layer c: one shape in two groups
    return 0


if __name__ == "__main__":
    sys.exit(main())
