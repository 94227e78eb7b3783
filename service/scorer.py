"""Batched scoring on top of the indexer's reference engine, plus the asyncio micro-batcher.

One worker thread owns the model and the device: the batcher hands it batches of distinct
queries, one scan of the factor store serves the whole batch, and identical queries in flight
share one computation.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from indexer.data import Example
from indexer.query import QueryEngine
from indexer.scoring import score_store
from indexer.store import NUMPY_STORAGE


@dataclass
class Scored:
    """Top-k of one query in both directions, with its timings."""

    proponent_ids: np.ndarray
    proponent_scores: np.ndarray
    opponent_ids: np.ndarray
    opponent_scores: np.ndarray
    featurize_s: float
    scan_s: float
    queue_s: float = 0.0
    residual: float | None = None  # low-rank path: ||P - P_cq||_F / ||P||_F of the query


@dataclass(frozen=True)
class ScoringOptions:
    """How the scan scores (part of every cache key): exact, or rank-``query_rank`` queries
    with ``candidates`` x k rows per direction re-scored exactly."""

    query_rank: int = 0
    candidates: int = 4

    @property
    def path(self) -> str:
        return "low-rank" if self.query_rank else "exact"


class Overloaded(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the scoring queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class BatchScorer:
    """Score many queries with one scan (runs on the worker thread)."""

    def __init__(self, engine: QueryEngine, block_rows: int = 4096,
                 options: ScoringOptions = ScoringOptions(), on_scan=None):
        self.engine, self.options = engine, options
        self.block_rows = block_rows
        self.store = engine.index.store()
        self.on_scan = on_scan  # callback(n_queries, n_bytes, seconds) for metrics

    def score(self, queries: list[Example], k: int) -> list[Scored]:
        t0 = time.perf_counter()
        p = self.engine.preconditioned(queries)
        t1 = time.perf_counter()
        res = score_store(self.store, p, k=k, block_rows=self.block_rows, keep_scores=False,
                          device=self.engine.featurizer.device,
                          query_rank=self.options.query_rank, candidates=self.options.candidates)
        t2 = time.perf_counter()
        if self.on_scan:
            row_bytes = self.store.layout.width * NUMPY_STORAGE[self.store.dtype].itemsize
            self.on_scan(len(queries), row_bytes * len(self.store), t2 - t1)
        return [Scored(res.proponent_ids[i], res.proponent_scores[i], res.opponent_ids[i],
                       res.opponent_scores[i], t1 - t0, t2 - t1,
                       residual=None if res.residual is None else float(res.residual[i]))
                for i in range(len(queries))]


@dataclass
class _Job:
    key: str
    example: Example
    k: int
    future: asyncio.Future
    enqueued: float


class MicroBatcher:
    """Groups concurrent queries (up to ``max_batch``, waiting at most ``max_wait_s``)."""

    def __init__(self, scorer: BatchScorer, max_batch: int, max_wait_s: float, queue_size: int,
                 on_batch=None):
        self.scorer = scorer
        self.max_batch, self.max_wait_s, self.queue_size = max_batch, max_wait_s, queue_size
        self.on_batch = on_batch  # callback(batch_size)
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.inflight: dict[str, asyncio.Future] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorif-scorer")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def run_exclusive(self, fn, *args):
        """Run ``fn(*args)`` on the worker thread that owns the model (queued behind scans)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, key: str, example: Example, k: int) -> Scored:
        shared = self.inflight.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        if self.queue.qsize() >= self.queue_size:
            raise Overloaded(retry_after=max(1, int(self.queue_size / self.max_batch)))
        future = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        future.add_done_callback(lambda _: self.inflight.pop(key, None))
        self.queue.put_nowait(_Job(key, example, k, future, time.perf_counter()))
        return await asyncio.shield(future)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(jobs) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            if self.on_batch:
                self.on_batch(len(jobs))
            started = time.perf_counter()
            k = max(j.k for j in jobs)
            try:
                results = await loop.run_in_executor(
                    self.executor, self.scorer.score, [j.example for j in jobs], k)
            except Exception as e:  # noqa: BLE001 - the error belongs to the requests
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            for j, r in zip(jobs, results):
                r.queue_s = started - j.enqueued
                if not j.future.done():
                    j.future.set_result(r)
