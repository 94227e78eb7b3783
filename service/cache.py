"""Result caches: an in-process LRU (the default) and Redis with short timeouts and a circuit
breaker, so a slow or dead Redis never stalls or fails a query (it only stops caching)."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections import OrderedDict
from typing import Protocol

import numpy as np

from indexer import Example

from .scorer import Scored, ScoringOptions

CACHE_FORMAT = 2
_MAGIC = b"LRF"


def query_key(fingerprint: str, options: ScoringOptions, example: Example, k: int) -> str:
    """Cache key: format version, index fingerprint, scoring options and the query's hash."""
    text = hashlib.sha256(json.dumps([example.prompt, example.completion]).encode()).hexdigest()
    opts = f"{options.query_rank}x{options.candidates}" if options.query_rank else "exact"
    return f"lorif:v{CACHE_FORMAT}:{fingerprint}:{opts}:k{k}:{text}"


def serialize(s: Scored) -> bytes:
    """Compact value: magic, version, k, residual (NaN = exact), then ids (int32) and scores
    (float32) both ways: 12 + 16 k bytes."""
    k = len(s.proponent_ids)
    residual = float("nan") if s.residual is None else s.residual
    head = _MAGIC + struct.pack("<BIf", CACHE_FORMAT, k, residual)
    return head + b"".join(
        np.ascontiguousarray(a, dtype=d).tobytes()
        for a, d in (
            (s.proponent_ids, "<i4"),
            (s.proponent_scores, "<f4"),
            (s.opponent_ids, "<i4"),
            (s.opponent_scores, "<f4"),
        )
    )


def deserialize(raw: bytes) -> Scored | None:
    """The Scored value of ``serialize``, or None for bytes of another format."""
    if raw[:3] != _MAGIC or raw[3] != CACHE_FORMAT:
        return None
    k, residual = struct.unpack("<If", raw[4:12])
    parts = [
        np.frombuffer(raw, dtype=d, count=k, offset=12 + 4 * k * i)
        for i, d in enumerate(("<i4", "<f4", "<i4", "<f4"))
    ]
    return Scored(
        parts[0].astype(np.int64),
        parts[1],
        parts[2].astype(np.int64),
        parts[3],
        0,
        0,
        residual=None if np.isnan(residual) else residual,
    )


class ResultCache(Protocol):
    async def get(self, key: str) -> Scored | None: ...

    async def put(self, key: str, value: Scored) -> None: ...

    @property
    def healthy(self) -> bool: ...


class LRUCache:
    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict[str, Scored] = OrderedDict()
        self.healthy = True

    async def get(self, key: str) -> Scored | None:
        if key in self.data:
            self.data.move_to_end(key)
        return self.data.get(key)

    async def put(self, key: str, value: Scored) -> None:
        if self.size:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


class RedisCache:
    """Redis with per-call timeouts; after ``failures`` consecutive errors the breaker opens and
    Redis is skipped for ``reset_s`` seconds, then one call tries again (half-open)."""

    def __init__(
        self,
        url: str,
        ttl_s: int,
        timeout_s: float = 0.05,
        failures: int = 3,
        reset_s: float = 5.0,
        on_error=None,
    ):
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self.ttl_s, self.failures, self.reset_s = ttl_s, failures, reset_s
        self.on_error = on_error
        self._errors, self._open_until = 0, 0.0

    @property
    def healthy(self) -> bool:
        return self._errors < self.failures

    def _skip(self) -> bool:
        return not self.healthy and time.monotonic() < self._open_until

    def _failed(self) -> None:
        self._errors += 1
        if self._errors >= self.failures:
            self._open_until = time.monotonic() + self.reset_s
        if self.on_error:
            self.on_error()

    async def get(self, key: str) -> Scored | None:
        if self._skip():
            return None
        try:
            raw = await self.client.get(key)
        except Exception:  # noqa: BLE001 - any Redis failure degrades to "no cache"
            self._failed()
            return None
        self._errors = 0
        return deserialize(raw) if isinstance(raw, bytes) else None

    async def put(self, key: str, value: Scored) -> None:
        if self._skip():
            return
        try:
            await self.client.set(key, serialize(value), ex=self.ttl_s)
        except Exception:  # noqa: BLE001 - as in get
            self._failed()
            return
        self._errors = 0

    async def close(self) -> None:
        await self.client.aclose()


class ExampleCache:
    """Recently shown training examples (text + metadata), so a cached answer costs no HDF5
    read; ``load(ids)`` fetches the missing ones in one batched read."""

    def __init__(self, load, size: int = 8192):
        self.load, self.size = load, size
        self.data: OrderedDict[int, Example] = OrderedDict()

    def get_many(self, ids: list[int]) -> list[Example]:
        missing = [i for i in dict.fromkeys(ids) if i not in self.data]
        for i, ex in zip(missing, self.load(missing) if missing else [], strict=False):
            self.data[i] = ex
        out = []
        for i in ids:
            self.data.move_to_end(i)
            out.append(self.data[i])
        while len(self.data) > self.size:
            self.data.popitem(last=False)
        return out
