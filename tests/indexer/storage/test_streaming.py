"""Block reader: a reader thread fills a ring of reused buffers; every row once, in order."""

from __future__ import annotations

import threading

import pytest
import torch

from indexer.engine.layout import FactorLayout, TrackedLayer
from indexer.storage.codec import decode_rows as decode
from indexer.storage.store import MemoryFactorStore
from indexer.storage.streaming import BlockReader, iter_blocks

LAYOUT = FactorLayout((TrackedLayer("a", 12, 10, 6, 5), TrackedLayer("b", 20, 8, 7, 4)), (2, 2))


def random_store(n: int, dtype: str, seed: int = 0) -> MemoryFactorStore:
    gen = torch.Generator().manual_seed(seed)
    return MemoryFactorStore.from_float(LAYOUT, torch.randn(n, LAYOUT.width, generator=gen), dtype)


def random_queries(q: int, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {t.name: torch.randn(q, t.d1, t.d2, generator=gen) for t in LAYOUT.layers}


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("block_rows", [1, 7, 64, 1000])
@pytest.mark.parametrize("readers", [1, 3])
def test_reader_yields_every_row_once_in_order(dtype, block_rows, readers):
    store = random_store(101, dtype)
    seen = []
    for start, rows in BlockReader(store, block_rows, depth=2, readers=readers):
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
