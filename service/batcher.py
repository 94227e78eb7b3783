"""The asyncio micro-batcher: concurrent queries are grouped (up to ``max_batch``, waiting at
most ``max_wait_s``) and handed to one worker thread, which owns the model and the device;
identical queries in flight share one computation; a bounded queue answers Overloaded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from indexer import Example

from .scorer import BatchScorer, Scored

T = TypeVar("T")


class Overloaded(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the scoring queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Job:
    key: str
    example: Example
    k: int
    future: asyncio.Future[Scored]
    enqueued: float


class MicroBatcher:
    """Groups concurrent queries (up to ``max_batch``, waiting at most ``max_wait_s``)."""

    def __init__(
        self,
        scorer: BatchScorer,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.scorer = scorer
        self.max_batch, self.max_wait_s, self.queue_size = max_batch, max_wait_s, queue_size
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.inflight: dict[str, asyncio.Future[Scored]] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorif-scorer")
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True)

    async def run_exclusive(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread that owns the model (queued behind scans)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, key: str, example: Example, k: int) -> Scored:
        shared = self.inflight.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        if self.queue.qsize() >= self.queue_size:
            raise Overloaded(retry_after=max(1, int(self.queue_size / self.max_batch)))
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        future.add_done_callback(lambda _: self.inflight.pop(key, None))
        self.queue.put_nowait(_Job(key, example, k, future, time.perf_counter()))
        return await asyncio.shield(future)

    async def _next_batch(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        jobs = [await self.queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(jobs) < self.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), timeout))
            except TimeoutError:
                break
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            if self.on_batch:
                self.on_batch(len(jobs))
            started = time.perf_counter()
            k = max(j.k for j in jobs)
            try:
                results = await loop.run_in_executor(
                    self.executor, self.scorer.score, [j.example for j in jobs], k
                )
            except Exception as e:  # noqa: BLE001 - the error belongs to the requests
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            for j, r in zip(jobs, results, strict=True):
                r.queue_s = started - j.enqueued
                if not j.future.done():
                    j.future.set_result(r)
