"""Several factor stores seen as one: the rows of a sharded index (shard after shard, global
example ids = the shard's offset + its local id).

The first piece of the sharded index format (issue "Scale out I"): everything that streams
rows (the scan, the curvature, resident mode, the integrity check) takes a ``FactorStore``, so a
store over shards lets all of them run unchanged over an index split into files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .codec import RawRows
from .store import FactorStore


class ShardedFactorStore(FactorStore):
    """Shards (same layout and dtype) concatenated in order."""

    def __init__(self, shards: Sequence[FactorStore]):
        if not shards:
            raise ValueError("a sharded store needs at least one shard")
        first = shards[0]
        for i, shard in enumerate(shards):
            if shard.layout != first.layout or shard.dtype != first.dtype:
                raise ValueError(f"shard {i} has another layout or dtype than shard 0")
        super().__init__(first.layout, first.dtype)
        self.shards = list(shards)
        # offsets[i] = global id of shard i's first row; offsets[-1] = N
        self.offsets = np.cumsum([0, *(len(s) for s in self.shards)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, stop: int) -> RawRows:
        """Rows [start, stop): a view when they lie in one shard, else a concatenated copy."""
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts = []
        while start < stop:
            base = int(self.offsets[first])
            end = min(stop, int(self.offsets[first + 1]))
            parts.append(self.shards[first].read(start - base, end - base))
            start, first = end, first + 1
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return self.shards[0].read(0, 0)
        out: RawRows = np.concatenate(parts)
        return out

    def take(self, ids: npt.NDArray[np.int64]) -> RawRows:
        """Rows ``ids`` (sorted, unique), gathered shard by shard."""
        shard_of = np.searchsorted(self.offsets, ids, side="right") - 1
        parts = [
            self.shards[s].take(ids[shard_of == s] - self.offsets[s]) for s in np.unique(shard_of)
        ]
        if not parts:
            return self.shards[0].take(ids)
        out: RawRows = np.concatenate(parts)
        return out
