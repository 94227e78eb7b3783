"""Result caches: an in-process LRU (the default) and Redis with short timeouts and a circuit
breaker, so a slow or dead Redis never stalls or fails a query (it only stops caching); with
Redis, the LRU sits in front of it as a near cache (``NearCache``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

from indexer import Example

from .cache_codec import deserialize, serialize
from .scorer import Scored


class ResultCache(Protocol):
    async def get(self, key: str) -> Scored | None: ...

    async def put(self, key: str, value: Scored) -> None: ...

    @property
    def healthy(self) -> bool: ...

    async def warm(self) -> None: ...

    async def probe(self) -> bool:
        """Try the cache now (readiness asks while it is unhealthy); healthy afterwards."""
        ...

    async def close(self) -> None: ...


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

    async def warm(self) -> None:
        pass

    async def probe(self) -> bool:
        return True

    async def close(self) -> None:
        pass


class RedisCache:
    """Redis with per-call timeouts; after ``failures`` consecutive errors the breaker opens and
    Redis is skipped for ``reset_s`` seconds, then one call tries again (half-open)."""

    def __init__(
        self,
        url: str,
        ttl_s: int,
        timeout_s: float = 0.05,
        connections: int = 16,
        failures: int = 3,
        reset_s: float = 5.0,
        on_error=None,
    ):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries: redis-py retries a failed call 3 times by default, which turned a dead or
        # slow Redis into 100+ ms per lookup; here a failed call is a cache miss. A bounded
        # pool: opening a connection costs ~1 ms of the event loop, and a burst of 64 requests
        # opening 64 of them (at start, after a Redis restart) stalled every answer 50-150 ms;
        # waiting for one of 16 open connections costs a fraction of that.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            driver_info=None,  # no CLIENT SETINFO round trips on every new connection
        )
        self.connections = connections
        self.client = aioredis.Redis(connection_pool=pool)
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

    async def warm(self) -> None:
        """Open the pool's connections now rather than in the first burst of requests (a
        failure here only means Redis is not there yet)."""
        with contextlib.suppress(Exception):
            await asyncio.gather(*(self.client.ping() for _ in range(self.connections)))

    async def probe(self) -> bool:
        """One PING (within the call timeout): Redis back closes the breaker at once, not
        at the next query that happens to use it."""
        try:
            await self.client.ping()
        except Exception:  # noqa: BLE001 - still down
            return False
        self._errors = 0
        return True

    async def close(self) -> None:
        await self.client.aclose()


class NearCache:
    """This process's LRU in front of a shared cache. A hit in the LRU costs no round trip and
    no await, so under a burst it is not queued behind other requests' Redis calls or the
    connection pool; and recently asked answers keep coming from the cache while Redis is down.
    Never stale: keys name the index content, the options and the query, and a value is the
    deterministic answer for its key."""

    def __init__(self, near: LRUCache, far: ResultCache):
        self.near, self.far = near, far

    @property
    def healthy(self) -> bool:
        return self.far.healthy

    async def get(self, key: str) -> Scored | None:
        value = await self.near.get(key)
        if value is None:
            value = await self.far.get(key)
            if value is not None:
                await self.near.put(key, value)
        return value

    async def put(self, key: str, value: Scored) -> None:
        await self.near.put(key, value)
        await self.far.put(key, value)

    async def warm(self) -> None:
        await self.far.warm()

    async def probe(self) -> bool:
        return await self.far.probe()

    async def close(self) -> None:
        await self.far.close()


class ExampleCache:
    """Recently shown training examples (text + metadata), so a cached answer costs no HDF5
    read; ``load(ids)`` fetches the missing ones in one batched read. Thread-safe: routes read
    it on the event loop when everything is cached and from worker threads otherwise."""

    def __init__(self, load: Callable[[list[int]], list[Example]], size: int = 8192):
        self.load, self.size = load, size
        self.data: OrderedDict[int, Example] = OrderedDict()
        self.lock = threading.Lock()

    def missing(self, ids: Iterable[int]) -> list[int]:
        with self.lock:
            return [i for i in dict.fromkeys(ids) if i not in self.data]

    def get_many(self, ids: list[int]) -> list[Example]:
        with self.lock:
            have = {i: self.data[i] for i in dict.fromkeys(ids) if i in self.data}
        missing = [i for i in dict.fromkeys(ids) if i not in have]
        if missing:
            have.update(zip(missing, self.load(missing), strict=True))
        with self.lock:
            for i, ex in have.items():
                self.data[i] = ex
                self.data.move_to_end(i)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return [have[i] for i in ids]
