"""What one serving process holds: settings, the query engine (index + model), the batcher that
owns the worker thread, the result cache, recently shown examples and the metrics; started and
stopped by the app's lifespan. Routes reach it through :func:`runtime`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from fastapi import Request

from indexer import DataError, Example, QueryEngine, QueryTooLongError, snippet

from .batcher import MicroBatcher
from .cache import ExampleCache, LRUCache, RedisCache, ResultCache
from .errors import ApiError
from .metrics import Metrics
from .protocol import Result
from .scorer import BatchScorer, ScoringOptions
from .settings import ServiceSettings


class Runtime:
    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.metrics = Metrics()
        errors_counter = self.metrics.cache.labels("error")
        self.cache: ResultCache = (
            RedisCache(
                settings.redis_url,
                settings.cache_ttl_s,
                settings.redis_timeout_s,
                reset_s=settings.redis_breaker_reset_s,
                on_error=errors_counter.inc,
            )
            if settings.redis_url
            else LRUCache(settings.cache_size)
        )
        self.options = ScoringOptions(settings.query_rank, settings.candidates)
        self._engine: QueryEngine | None = None
        self._batcher: MicroBatcher | None = None
        self.examples = ExampleCache(lambda ids: self.engine.index.examples_at(ids))
        self.ready = False

    @property
    def engine(self) -> QueryEngine:
        assert self._engine is not None, "the runtime is not started"
        return self._engine

    @property
    def batcher(self) -> MicroBatcher:
        assert self._batcher is not None, "the runtime is not started"
        return self._batcher

    async def start(self) -> None:
        """Load the index and the model off the event loop, start the worker, warm up."""
        s = self.settings
        self._engine = await asyncio.get_running_loop().run_in_executor(
            None, lambda: QueryEngine.open(s.index, model=s.model, device=s.device)
        )
        scorer = BatchScorer(self.engine, s.block_rows, self.options, on_scan=self.metrics.on_scan)
        self._batcher = MicroBatcher(
            scorer,
            s.max_batch,
            s.max_wait_ms / 1000,
            s.queue_size,
            on_batch=self.metrics.batch_size.observe,
        )
        self.batcher.start()
        await self.batcher.submit("warm-up", Example(completion="warm up the scorer."), 1)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._batcher is not None:
            await self._batcher.stop()
        if self._engine is not None:
            self._engine.close()
        if isinstance(self.cache, RedisCache):
            await self.cache.close()

    def checked_query(self, prompt: str, completion: str | None) -> tuple[Example, int]:
        """The query as an Example and its token count; 422 when it is empty or too long."""
        try:
            return self.engine.checked_query(prompt, completion, self.settings.max_prompt_tokens)
        except QueryTooLongError as e:
            raise ApiError(422, "Query too long", str(e)) from None
        except DataError as e:
            raise ApiError(422, "Empty query", str(e)) from None

    def check_example_id(self, example_id: int) -> None:
        n = len(self.engine.index)
        if not 0 <= example_id < n:
            raise ApiError(404, "Unknown example", f"example_id must be in [0, {n})")

    def results(
        self,
        ids: Sequence[int] | npt.NDArray[np.int64],
        scores: Sequence[float] | npt.NDArray[np.float32],
        k: int,
    ) -> list[Result]:
        """The first ``k`` (id, score) pairs as API results with snippet and metadata."""
        chosen = [int(i) for i in ids[:k]]
        examples = self.examples.get_many(chosen)
        return [
            Result(
                rank=rank,
                example_id=i,
                score=float(s),
                snippet=snippet(ex.text, self.settings.snippet_chars),
                meta=ex.meta,
            )
            for rank, (i, s, ex) in enumerate(zip(chosen, scores[:k], examples, strict=False), 1)
        ]


def runtime(request: Request) -> Runtime:
    """FastAPI dependency: the app's runtime."""
    rt: Runtime = request.app.state.lorif
    return rt
