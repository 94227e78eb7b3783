"""App factory: ``create_app(settings)`` loads the index and model in the lifespan, warms up,
and serves the v1 API (attributions, examples, index), health routes and metrics."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from indexer.data import Example, snippet
from indexer.errors import ConfigError, DataError
from indexer.explain import explain
from indexer.tasks import CausalLMTask
from indexer.query import QueryEngine

from . import errors
from .cache import ExampleCache, LRUCache, RedisCache, ResultCache, query_key
from .errors import ApiError
from .metrics import Metrics
from .protocol import (Approximation, AttributionRequest, AttributionResponse, ExampleResponse,
                       ExplanationRequest, ExplanationResponse, IndexSummary, Result, Timings,
                       TokenScore)
from .scorer import BatchScorer, MicroBatcher, Overloaded, ScoringOptions
from .settings import ServiceSettings


STATIC = Path(__file__).parent / "static"
# The page loads only its own files; data is rendered as text (see static/app.js), and this
# policy makes any markup that slipped through inert as well.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; object-src 'none'; "
                "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class State:
    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.metrics = Metrics()
        errors_counter = self.metrics.cache.labels("error")
        self.cache: ResultCache = (
            RedisCache(settings.redis_url, settings.cache_ttl_s, settings.redis_timeout_s,
                       reset_s=settings.redis_breaker_reset_s, on_error=errors_counter.inc)
            if settings.redis_url else LRUCache(settings.cache_size))
        self.options = ScoringOptions(settings.query_rank, settings.candidates)
        self.engine: QueryEngine | None = None
        self.examples = ExampleCache(lambda ids: self.engine.index.examples_at(ids))
        self.batcher: MicroBatcher | None = None
        self.ready = False


def _summary(engine: QueryEngine, options: ScoringOptions) -> IndexSummary:
    m = engine.index.manifest
    per, dense = engine.index.bytes_per_example()
    layers = [{"name": d["name"], "in_dim": d["in_dim"], "out_dim": d["out_dim"], "d1": d["d1"],
               "d2": d["d2"], "lambda": m["curvature"]["lambda"][d["name"]]} for d in m["layers"]]
    return IndexSummary(fingerprint=engine.index.fingerprint, model=m["model"],
                        n_examples=len(engine.index), n_layers=len(layers), layers=layers,
                        rank_c=m["rank"], curvature_rank_r=m["curvature"]["rank"],
                        storage_dtype=m["storage_dtype"], bytes_per_example=per,
                        dense_bytes_per_example=dense, dense_ratio=round(dense / per, 2),
                        created=m.get("build_info", {}).get("created"),
                        scoring_path=options.path, query_rank=options.query_rank)


def create_app(settings: ServiceSettings) -> FastAPI:
    state = State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        state.engine = await loop.run_in_executor(
            None, lambda: QueryEngine.open(settings.index, model=settings.model,
                                           device=settings.device))
        scorer = BatchScorer(state.engine, settings.block_rows, state.options,
                             on_scan=state.metrics.on_scan)
        state.batcher = MicroBatcher(scorer, settings.max_batch, settings.max_wait_ms / 1000,
                                     settings.queue_size,
                                     on_batch=state.metrics.batch_size.observe)
        state.batcher.start()
        await state.batcher.submit("warm-up", Example(completion="warm up the scorer."), 1)
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await state.batcher.stop()
            state.engine.close()
            if isinstance(state.cache, RedisCache):
                await state.cache.close()

    app = FastAPI(title="LoRIF attribution service", version="1", lifespan=lifespan)
    app.state.lorif = state
    errors.install(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if path.startswith("/v1/"):
            if settings.api_key and request.headers.get("x-api-key") != settings.api_key:
                return errors.problem(401, "Unauthorized", "missing or wrong X-API-Key", path)
            if request.method == "POST":
                size = request.headers.get("content-length")
                if size is not None and size.isdigit() and int(size) > settings.max_body_bytes:
                    return errors.problem(413, "Request body too large",
                                          f"at most {settings.max_body_bytes} bytes", path)
                ctype = request.headers.get("content-type", "").split(";")[0].strip()
                if ctype != "application/json":
                    return errors.problem(415, "Unsupported media type",
                                          "send the body as application/json", path)
            if not state.ready:
                return errors.problem(503, "Not ready", "the index is loading", path,
                                      headers={"Retry-After": "5"})
        response = await call_next(request)
        if path == "/" or path.startswith("/static/"):
            response.headers.update(PAGE_HEADERS)
        route = request.scope.get("route")
        state.metrics.responses.labels(getattr(route, "path", "unmatched"),
                                       str(response.status_code)).inc()
        return response

    def engine() -> QueryEngine:
        assert state.engine is not None
        return state.engine

    def rows(ids, scores, k: int) -> list[Result]:
        ids = [int(i) for i in ids[:k]]
        examples = state.examples.get_many(ids)
        return [Result(rank=rank, example_id=i, score=float(s),
                       snippet=snippet(ex.text, settings.snippet_chars), meta=ex.meta)
                for rank, (i, s, ex) in enumerate(zip(ids, scores[:k], examples), 1)]

    def checked_query(prompt: str, completion: str | None) -> tuple[Example, int]:
        q = (Example(prompt=prompt, completion=completion) if completion
             else Example(completion=prompt))
        try:
            n_tokens = engine().query_tokens(q)
        except DataError:
            raise ApiError(422, "Empty query", "no token of the query counts in the loss"
                           ) from None
        task = engine().featurizer.task
        full = task.full_length(q) if isinstance(task, CausalLMTask) else n_tokens
        limit = min(settings.max_prompt_tokens, getattr(task, "max_tokens", full))
        if full > limit:
            raise ApiError(422, "Query too long", f"the query has {full} tokens; at most "
                           f"{limit} are accepted")
        return q, n_tokens

    @app.post("/v1/attributions", response_model=AttributionResponse,
              response_model_exclude_none=True)
    async def attributions(req: AttributionRequest) -> AttributionResponse:
        t0 = time.perf_counter()
        q, n_tokens = checked_query(req.prompt, req.completion)
        key = query_key(engine().index.fingerprint, state.options, q, req.k)
        scored, cached = await state.cache.get(key), True
        state.metrics.cache.labels("hit" if scored else "miss").inc()
        if scored is None:
            cached = False
            state.metrics.queue_depth.set(state.batcher.depth)
            try:
                scored = await asyncio.wait_for(state.batcher.submit(key, q, req.k),
                                                settings.request_timeout_s)
            except Overloaded as e:
                raise ApiError(429, "Too many requests", str(e),
                               headers={"Retry-After": str(e.retry_after)}) from None
            except asyncio.TimeoutError:
                raise ApiError(504, "Deadline exceeded", "the query was not scored within "
                               f"{settings.request_timeout_s} s") from None
            await state.cache.put(key, scored)
        both = req.direction == "both"
        proponents = (rows(scored.proponent_ids, scored.proponent_scores, req.k)
                      if both or req.direction == "proponents" else None)
        opponents = (rows(scored.opponent_ids, scored.opponent_scores, req.k)
                     if both or req.direction == "opponents" else None)
        timings = Timings(queue_ms=0.0 if cached else scored.queue_s * 1000,
                          featurize_ms=0.0 if cached else scored.featurize_s * 1000,
                          scan_ms=0.0 if cached else scored.scan_s * 1000,
                          total_ms=(time.perf_counter() - t0) * 1000)
        return AttributionResponse(
            index_fingerprint=engine().index.fingerprint, query_tokens=n_tokens,
            scoring=Approximation(path=state.options.path, query_rank=state.options.query_rank,
                                  residual=scored.residual),
            proponents=proponents, opponents=opponents, cached=cached, timings=timings)

    @app.post("/v1/explanations", response_model=ExplanationResponse)
    async def explanations(req: ExplanationRequest) -> ExplanationResponse:
        """Split one training example's score for the query over both texts' tokens."""
        q, _ = checked_query(req.prompt, req.completion)
        n = len(engine().index)
        if req.example_id >= n:
            raise ApiError(404, "Unknown example", f"example_id must be in [0, {n})")
        t0 = time.perf_counter()
        try:
            e = await asyncio.wait_for(state.batcher.run_exclusive(explain, engine(), q,
                                                                   req.example_id),
                                       settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, "Deadline exceeded", "the explanation was not computed within "
                           f"{settings.request_timeout_s} s") from None
        except (ConfigError, DataError) as e:
            raise ApiError(422, "Cannot explain this pair", str(e)) from None
        tokens = lambda ts: [TokenScore(text=t.text, contribution=t.contribution,  # noqa: E731
                                        target=t.target) for t in ts]
        return ExplanationResponse(
            index_fingerprint=engine().index.fingerprint, example_id=e.example_id,
            score=e.score, index_score=e.index_score, query_tokens=tokens(e.query_tokens),
            example_tokens=tokens(e.example_tokens), example_truncated=e.example_truncated,
            meta=engine().index.example(e.example_id).meta,
            compute_ms=(time.perf_counter() - t0) * 1000)

    @app.get("/v1/examples/{example_id}", response_model=ExampleResponse)
    async def example(example_id: int) -> ExampleResponse:
        n = len(engine().index)
        if not 0 <= example_id < n:
            raise ApiError(404, "Unknown example", f"example_id must be in [0, {n})")
        ex = engine().index.example(example_id)
        n_tokens = int(engine().index.file["examples/n_tokens"][example_id])
        return ExampleResponse(example_id=example_id, prompt=ex.prompt, completion=ex.completion,
                               text=ex.text, meta=ex.meta, n_tokens=n_tokens)

    @app.get("/v1/index", response_model=IndexSummary)
    async def index_summary() -> IndexSummary:
        return _summary(engine(), state.options)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The browse page (plain HTML/CSS/JS, no external resources)."""
        return FileResponse(STATIC / "index.html")

    @app.get("/health/live")
    async def live() -> dict[str, Any]:
        return {"status": "live"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        if not state.ready:
            return errors.problem(503, "Not ready", "the index is loading", "/health/ready")
        return JSONResponse({"status": "ready" if state.cache.healthy else "degraded",
                             "cache": "ok" if state.cache.healthy else "unavailable",
                             "index": engine().index.fingerprint})

    @app.get("/metrics")
    async def metrics() -> Response:
        if state.batcher is not None:
            state.metrics.queue_depth.set(state.batcher.depth)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
