"""One published version of the index as this server serves it: the index opened and verified,
the content id its cache keys are made of, its examples and verbatim table, the query checker,
the scorer (child process, thread or cluster) and the batcher that feeds it.

Everything a query reads comes from the version it holds (``Versions.hold``): a version that is
replaced keeps serving the queries that hold it and is closed after the last one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from indexer import (
    Example,
    Index,
    IndexFormatError,
    QueryChecker,
    QueryOptions,
    VerifyReport,
)

from .batcher import MicroBatcher, NonFiniteScores
from .cache import ExampleCache, ResultCache
from .metrics import Metrics
from .scorer import BatchScorer, Scoring
from .scorer_process import ScorerProcess, ScorerSpec
from .scorer_spawn import Spares
from .settings import ServiceSettings
from .verbatim import VerbatimLookup, open_lookup

log = logging.getLogger("lorif")
WARM_UP = Example(completion="warm up the scorer.")


@dataclass
class Version:
    """A version being served (see the module docstring); ``number``: 1 for the version the
    server started with, then one more per switch."""

    number: int
    index: Index
    content_id: str
    examples: ExampleCache
    verbatim: VerbatimLookup | None
    checker: QueryChecker
    scorer: Scoring
    batcher: MicroBatcher
    opened: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    users: int = 0  # requests holding it
    retired: bool = False  # replaced: closed when the last holder is done
    _closed: asyncio.Event = field(default_factory=asyncio.Event)
    _index_summary: dict[str, Any] | None = None

    @property
    def fingerprint(self) -> str:
        return self.index.fingerprint

    @property
    def index_summary(self) -> dict[str, Any]:
        """The index's summary as opened (model, preconditioner, ...: what provenance
        names), read once."""
        if self._index_summary is None:
            self._index_summary = self.index.summary()
        return self._index_summary

    def summary(self) -> dict[str, Any]:
        """What ``GET /v1/index`` and ``/health/ready`` report of it."""
        return {
            "number": self.number,
            "fingerprint": self.fingerprint,
            "rows": len(self.index),
            "curvature_rows": self.index.curvature_rows,
            "opened": self.opened,
        }

    async def close(self) -> None:
        """Stop the batcher, the scorer and close the files (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        await self.batcher.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.scorer.close)
        if self.verbatim is not None:
            self.verbatim.close()
        self.index.close()
        log.info("closed index version %d (%s)", self.number, self.fingerprint)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


@dataclass
class Opener:
    """What opening a version needs from the server; ``on_stale``: called (from any thread)
    when a scorer finds that its version's files are gone from disk, so the server opens the
    published one instead."""

    settings: ServiceSettings
    metrics: Metrics
    cache: ResultCache
    defaults: QueryOptions
    shard_groups: Sequence[Any] | None
    on_stale: Callable[[], None]
    cluster: Any = None  # ShardGroups: deployed once, shared by every version
    spares: Spares | None = None  # a scorer child ready to load, shared by every version

    def close(self) -> None:
        """Release what outlives versions (the cluster's shard groups, the spare scorer)."""
        if self.cluster is not None:
            self.cluster.close()
        if self.spares is not None:
            self.spares.close()

    @property
    def on_cluster(self) -> bool:
        """The scan runs on Ray Serve: deployed by this process (``cluster``) or bound into
        the Serve application this app is the ingress of (``shard_groups``)."""
        return bool(self.settings.cluster) or self.shard_groups is not None

    async def open(self, index: Index, report: VerifyReport, number: int) -> Version:
        """Load ``index`` (verified as ``report`` says) behind a scorer and a batcher, warm it
        up; the version owns ``index`` from here on (closed again if this fails)."""
        s = self.settings
        # Only what this process read and checked may share cache entries with other replicas.
        content_id = report.content_id or f"unverified-{index.fingerprint}-{uuid.uuid4().hex}"
        examples = ExampleCache(index.examples_at)
        try:
            self.defaults.for_index(index.curvature_record)  # a default damping it cannot take
            checker, scorer = await self._scorer(index)
        except BaseException:
            index.close()
            raise
        batcher = MicroBatcher(
            scorer,
            s.max_batch,
            s.max_wait_ms / 1000,
            s.queue_size,
            exclusive_size=s.explain_queue,
            on_batch=self.metrics.batch_size.observe,
            on_result=self.cache.put,
        )
        verbatim = open_lookup(index, examples, s.snippet_chars)
        version = Version(number, index, content_id, examples, verbatim, checker, scorer, batcher)
        batcher.start()
        try:
            deadline = time.monotonic() + 3600
            await batcher.submit("warm-up", WARM_UP, self.defaults.replace(k=1), 0, deadline)
        except NonFiniteScores:
            await version.close()
            raise IndexFormatError(
                f"{index.path}: the warm-up query scored NaN or infinity (damaged "
                "factor rows?); check the file with `lorif index verify`"
            ) from None
        except BaseException:
            await version.close()
            raise
        return version

    async def _scorer(self, index: Index) -> tuple[QueryChecker, Scoring]:
        """The scorer process (while this process loads the tokenizer), the engine here, or
        the cluster's shard groups."""
        s, loop = self.settings, asyncio.get_running_loop()
        if self.on_cluster:
            from .cluster import ClusterScorer
            from .shard_groups import ShardGroups

            if self.cluster is None:
                self.cluster = await loop.run_in_executor(
                    None, ShardGroups.start, index, s, self.shard_groups
                )
            cluster = await loop.run_in_executor(
                None, ClusterScorer.start, index, self.cluster, s.device, self.metrics.on_scan
            )
            return cluster.engine.checker, cluster
        if s.scorer == "thread":
            scorer = await loop.run_in_executor(
                None,
                lambda: BatchScorer.open(
                    index, s.model, s.device, s.resident, s.block_rows, self.metrics.on_scan
                ),
            )
            return scorer.engine.checker, scorer
        spec = ScorerSpec(
            str(index.path),
            index.fingerprint,
            index.manifest.to_json() if index.sharded else None,
            s.model,
            s.device,
            s.threads,
            s.block_rows,
            s.resident,
            s.scorer_nice,
        )
        if self.spares is None and s.scorer_spare:
            self.spares = Spares()
        process = ScorerProcess(spec, self.metrics.on_scan, self.on_stale, self.spares)
        checker = loop.run_in_executor(None, QueryChecker.for_index, index, s.model)
        try:
            await loop.run_in_executor(None, process.start)
        except BaseException:
            await checker
            raise
        return await checker, process
