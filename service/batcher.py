"""The asyncio micro-batcher: concurrent queries are grouped (up to ``max_batch``, waiting at
most ``max_wait_s``) and handed to one worker thread, which makes the scorer's calls in turn.

- Identical queries in flight share one computation (and the later deadline of the two).
- A bounded queue answers Overloaded (429); so does a full queue of exclusive jobs
  (explanations), which share the worker.
- A job whose deadline passed before it started is dropped, not computed.
- A finished result goes to ``on_result`` (the cache) even when its request stopped waiting.
- A query is scored with its own k, so its answer does not depend on its batch-mates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from indexer import Example, QueryOptions

from .scorer import Scored, Scoring

T = TypeVar("T")


class Overloaded(Exception):
    def __init__(self, retry_after: int, what: str = "scoring"):
        super().__init__(f"the {what} queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class DeadlineExceeded(Exception):
    """The job's deadline passed before the worker could start it."""


class NonFiniteScores(Exception):
    """The scan produced NaN or infinite scores: the index (or the model) is damaged."""


@dataclass
class _Job:
    key: str
    example: Example
    options: QueryOptions  # canonical for the index: k, damping, normalisation, scan path
    n_tokens: int
    future: asyncio.Future[Scored]
    enqueued: float
    deadline: float  # time.monotonic()


class MicroBatcher:
    """Groups concurrent queries (up to ``max_batch``, waiting at most ``max_wait_s``)."""

    def __init__(
        self,
        scorer: Scoring,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        exclusive_size: int = 4,
        on_batch: Callable[[int], None] | None = None,
        on_result: Callable[[str, Scored], Coroutine[Any, Any, None]] | None = None,
    ):
        self.scorer = scorer
        self.max_batch, self.max_wait_s, self.queue_size = max_batch, max_wait_s, queue_size
        self.exclusive_size, self.exclusive_pending = exclusive_size, 0
        self.on_batch, self.on_result = on_batch, on_result
        self.dropped = 0  # jobs whose deadline passed before they started
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.inflight: dict[str, _Job] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorif-scorer")
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

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
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def run_exclusive(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread (queued behind scans); Overloaded when
        ``exclusive_size`` such jobs are already admitted, DeadlineExceeded when the deadline
        passes before the worker starts it."""
        if self.exclusive_pending >= self.exclusive_size:
            raise Overloaded(retry_after=max(1, self.exclusive_pending), what="explanation")

        def guarded() -> T:
            if time.monotonic() > deadline:
                raise DeadlineExceeded()
            return fn(*args)

        loop = asyncio.get_running_loop()
        self.exclusive_pending += 1
        job = self.executor.submit(guarded)
        # Released when the job is done or was cancelled before it started: a request that
        # gave up does not free the worker from a job already running.
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release_exclusive))
        return await asyncio.wrap_future(job)

    def _release_exclusive(self) -> None:
        self.exclusive_pending -= 1

    def submit(
        self,
        key: str,
        example: Example,
        options: QueryOptions,
        n_tokens: int,
        deadline: float,
    ) -> asyncio.Future[Scored]:
        """The future result of a query (shared with an identical one in flight). Await it
        through ``asyncio.shield``: the job stays alive when one waiter gives up."""
        shared = self.inflight.get(key)
        if shared is not None:
            shared.deadline = max(shared.deadline, deadline)
            return shared.future
        if self.queue.qsize() >= self.queue_size:
            raise Overloaded(retry_after=max(1, int(self.queue_size / self.max_batch)))
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        job = _Job(key, example, options, n_tokens, future, time.perf_counter(), deadline)
        self.inflight[key] = job
        future.add_done_callback(lambda _: self.inflight.pop(key, None))
        self.queue.put_nowait(job)
        return future

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
        now = time.monotonic()
        for late in [j for j in jobs if j.deadline < now]:
            self.dropped += 1
            if not late.future.done():
                late.future.set_exception(DeadlineExceeded())
        return [j for j in jobs if j.deadline >= now]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            if not jobs:
                continue
            if self.on_batch:
                self.on_batch(len(jobs))
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self.executor,
                    self.scorer.score,
                    [j.example for j in jobs],
                    [j.options for j in jobs],
                )
            except Exception as e:  # noqa: BLE001 - the error belongs to the requests
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            for j, r in zip(jobs, results, strict=True):
                self._finish(j, r, started)
                # One answer per turn of the event loop: a whole batch woken at once (and its
                # clients' next requests) held up requests already in flight, cache hits too.
                await asyncio.sleep(0)

    def _finish(self, job: _Job, result: Scored, started: float) -> None:
        if not result.finite:
            job.future.set_exception(NonFiniteScores("the scan produced non-finite scores"))
            return
        result.queue_s, result.n_tokens = started - job.enqueued, job.n_tokens
        if not job.future.done():
            job.future.set_result(result)
        if self.on_result is not None:
            task = asyncio.get_running_loop().create_task(self.on_result(job.key, result))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
