"""What one serving process holds: settings, the result cache, the server's query defaults, the
metrics, the CPU pool and the versions of the index it serves (``Versions``: each version holds
the verified index, its examples and verbatim table, the query checker, the scorer and the
batcher); started and stopped by the app's lifespan. Only wiring: the features' work is in
``service/serving/`` (one object per route); the health routes read it through
:func:`runtime`."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request

from indexer import Index, QueryOptions, VerifyReport, use_threads

from .cache import LRUCache, NearCache, RedisCache, ResultCache
from .metrics import Metrics
from .settings import ServiceSettings
from .version import Opener, Version
from .versions import Versions

log = logging.getLogger("lorif")
T = TypeVar("T")
OFFLOAD_THREADS = 2


class Runtime:
    def __init__(self, settings: ServiceSettings, shard_groups: Sequence[Any] | None = None):
        self.settings, self.shard_groups = settings, shard_groups
        self.metrics = Metrics()
        errors_counter = self.metrics.cache.labels("error")
        self.cache: ResultCache = LRUCache(settings.cache_size)
        if settings.redis_url:
            redis = RedisCache(
                settings.redis_url,
                settings.cache_ttl_s,
                settings.redis_timeout_s,
                connections=settings.redis_connections,
                reset_s=settings.redis_breaker_reset_s,
                on_error=errors_counter.inc,
            )
            self.cache = NearCache(self.cache, redis) if settings.cache_size else redis
        # the server's defaults (checked against each version: settings.damping)
        self.defaults = QueryOptions(
            damping=settings.damping, query_rank=settings.query_rank, candidates=settings.candidates
        )
        opener = Opener(
            settings, self.metrics, self.cache, self.defaults, shard_groups, self._stale
        )
        self.versions = Versions(opener, settings.index, settings.watch_s)
        self.ready = False
        # Tokenizing, HDF5 reads and large JSON run here, off the event loop; few threads, so
        # that few compete with the event loop for the GIL.
        self.cpu = ThreadPoolExecutor(OFFLOAD_THREADS, thread_name_prefix="lorif-cpu")

    def _stale(self) -> None:
        self.versions.stale()

    @property
    def current(self) -> Version:
        """The version new requests get (requests use the one they hold: ``versions.hold``)."""
        return self.versions.current

    @property
    def on_cluster(self) -> bool:
        """The scan runs on Ray Serve (``Opener.on_cluster``)."""
        return self.versions.opener.on_cluster

    @property
    def scoring(self) -> bool:
        """The current version's scorer can take calls (false while a dead scorer process
        restarts)."""
        return self.versions.started and self.current.scorer.available

    @property
    def spare_ready(self) -> bool:
        """A spare scorer process waits (``scorer_spare``): a restart loads at once."""
        spares = self.versions.opener.spares
        return spares is not None and spares.ready

    @property
    def scorer_lost(self) -> bool:
        """The scorer has been down longer than ``scorer_grace_s``: the process is not live."""
        since = self.current.scorer.down_since if self.versions.started else None
        return since is not None and time.monotonic() - since > self.settings.scorer_grace_s

    async def start(self, index: Index | None = None, report: VerifyReport | None = None) -> None:
        """Open and verify the index, load the model (all off the event loop), start the worker
        and warm it up. ``index``: one the caller opened already; ``report``: its check under
        ``settings.verify`` when the caller ran it."""
        log.info("torch CPU threads: %d", use_threads(self.settings.threads))
        await self.versions.start(index, report)
        await self.cache.warm()
        # The model, tokenizer and libraries are a few million long-lived objects; a full
        # collection walking them all stalled the event loop for tens of ms under load.
        gc.collect()
        gc.freeze()
        self.ready = True

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the CPU pool (off the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu, fn, *args)

    async def stop(self) -> None:
        self.ready = False
        self.cpu.shutdown(wait=False)
        await self.versions.stop()
        await self.cache.close()


async def runtime(request: Request) -> Runtime:
    """FastAPI dependency: the app's runtime (async: FastAPI runs a plain function dependency
    in its thread pool, a thread hop on every request)."""
    rt: Runtime = request.app.state.lorif
    return rt
