"""What one serving process holds: settings, the verified index, the query checker (tokenizer),
the scorer (the model and the scan: a child process, or this process with ``scorer = "thread"``),
the batcher that owns the worker thread, the result cache, recently shown examples and the
metrics; started and stopped by the app's lifespan. Only wiring: the features' work is in
``service/serving/`` (one object per route); the health routes read it through
:func:`runtime`."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request

from indexer import (
    Example,
    Index,
    IndexFormatError,
    QueryChecker,
    QueryOptions,
    VerifyReport,
    available_cpus,
    use_threads,
)

from .batcher import MicroBatcher, NonFiniteScores
from .cache import ExampleCache, LRUCache, NearCache, RedisCache, ResultCache
from .metrics import Metrics
from .scorer import BatchScorer, Scoring
from .scorer_process import ScorerProcess, ScorerSpec
from .settings import ServiceSettings
from .verbatim import VerbatimLookup, open_lookup

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
        # the server's defaults (checked at start-up: settings.damping against the index)
        self.defaults = QueryOptions(
            damping=settings.damping, query_rank=settings.query_rank, candidates=settings.candidates
        )
        self._index: Index | None = None
        self._checker: QueryChecker | None = None
        self._scorer: Scoring | None = None
        self._batcher: MicroBatcher | None = None
        self.examples = ExampleCache(lambda ids: self.index.examples_at(ids))
        self.content_id = ""  # set by start(): what cache keys are made of
        self.verbatim: VerbatimLookup | None = None  # set by start() when the index has one
        self.ready = False
        # Tokenizing, HDF5 reads and large JSON run here, off the event loop; few threads, so
        # that few compete with the event loop for the GIL.
        self.cpu = ThreadPoolExecutor(OFFLOAD_THREADS, thread_name_prefix="lorif-cpu")

    @property
    def index(self) -> Index:
        assert self._index is not None, "the runtime is not started"
        return self._index

    @property
    def scorer(self) -> Scoring:
        assert self._scorer is not None, "the runtime is not started"
        return self._scorer

    @property
    def on_cluster(self) -> bool:
        """The scan runs on Ray Serve: deployed by this process (``cluster``) or bound into
        the Serve application this app is the ingress of (``shard_groups``)."""
        return bool(self.settings.cluster) or self.shard_groups is not None

    @property
    def scoring(self) -> bool:
        """The scorer can take calls (false while a dead scorer process restarts)."""
        return self._scorer is not None and self._scorer.available

    @property
    def batcher(self) -> MicroBatcher:
        assert self._batcher is not None, "the runtime is not started"
        return self._batcher

    async def start(self, index: Index | None = None, report: VerifyReport | None = None) -> None:
        """Open and verify the index, load the model (all off the event loop), start the worker
        and warm it up. ``index``: one the caller opened already; ``report``: its check under
        ``settings.verify`` when the caller ran it."""
        s, loop = self.settings, asyncio.get_running_loop()
        log.info("torch CPU threads: %d", use_threads(s.threads))
        if index is None:
            index = await loop.run_in_executor(None, Index, s.index)
        if report is None:
            report = await loop.run_in_executor(None, index.verify, s.verify, available_cpus())
        log.info(
            "index %s: %s check (%s) of %.1f MiB of factors in %.2f s",
            index.path,
            report.mode,
            report.method,
            report.checked_bytes / 2**20,
            report.seconds,
        )
        self.defaults.for_index(index.curvature_record)  # a default damping refused at start
        # Only what this process read and checked may share cache entries with other replicas.
        self.content_id = report.content_id or f"unverified-{index.fingerprint}-{uuid.uuid4().hex}"
        self._index = index
        self.verbatim = open_lookup(index, self.examples, s.snippet_chars)
        await self._start_scorer(index)
        self._batcher = MicroBatcher(
            self.scorer,
            s.max_batch,
            s.max_wait_ms / 1000,
            s.queue_size,
            exclusive_size=s.explain_queue,
            on_batch=self.metrics.batch_size.observe,
            on_result=self.cache.put,
        )
        self.batcher.start()
        await self.cache.warm()
        warm_up = Example(completion="warm up the scorer.")
        try:
            deadline = time.monotonic() + 3600
            await self.batcher.submit("warm-up", warm_up, self.defaults.replace(k=1), 0, deadline)
        except NonFiniteScores:
            raise IndexFormatError(
                f"{index.path}: the warm-up query scored NaN or infinity (damaged "
                "factor rows?); check the file with `lorif index verify`"
            ) from None
        # The model, tokenizer and libraries are a few million long-lived objects; a full
        # collection walking them all stalled the event loop for tens of ms under load.
        gc.collect()
        gc.freeze()
        self.ready = True

    async def _start_scorer(self, index: Index) -> None:
        """The scorer process (while this process loads the tokenizer), or the engine here."""
        s, loop = self.settings, asyncio.get_running_loop()
        if self.on_cluster:
            from .cluster import ClusterScorer

            cluster = await loop.run_in_executor(
                None,
                lambda: ClusterScorer.start(index, s, self.metrics.on_scan, self.shard_groups),
            )
            self._checker, self._scorer = cluster.engine.checker, cluster
            return
        if s.scorer == "thread":
            scorer = await loop.run_in_executor(
                None,
                lambda: BatchScorer.open(
                    index, s.model, s.device, s.resident, s.block_rows, self.metrics.on_scan
                ),
            )
            self._checker, self._scorer = scorer.engine.checker, scorer
            return
        spec = ScorerSpec(
            str(index.path),
            index.fingerprint,
            s.model,
            s.device,
            s.threads,
            s.block_rows,
            s.resident,
            s.scorer_nice,
        )
        process = ScorerProcess(spec, on_scan=self.metrics.on_scan)
        checker = loop.run_in_executor(None, QueryChecker.for_index, index, s.model)
        try:
            await loop.run_in_executor(None, process.start)
        finally:
            self._checker = await checker
        self._scorer = process

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the CPU pool (off the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.cpu, fn, *args)

    async def stop(self) -> None:
        self.ready = False
        self.cpu.shutdown(wait=False)
        if self._batcher is not None:
            await self._batcher.stop()
        if self._scorer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._scorer.close)
        if self._index is not None:
            self._index.close()
        await self.cache.close()

    @property
    def checker(self) -> QueryChecker:
        """Query checks under the index's task (its tokenizer)."""
        assert self._checker is not None, "the runtime is not started"
        return self._checker


async def runtime(request: Request) -> Runtime:
    """FastAPI dependency: the app's runtime (async: FastAPI runs a plain function dependency
    in its thread pool, a thread hop on every request)."""
    rt: Runtime = request.app.state.lorif
    return rt
