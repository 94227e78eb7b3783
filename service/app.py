"""App factory: ``create_app(settings)`` wires the runtime (loaded and verified in the lifespan,
warmed up before ready), the guard, problem+json errors, the routers and the static files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from indexer import Index, LorifError, VerifyReport

from . import errors
from .middleware import Guard
from .routes import ROUTERS
from .routes.page import STATIC
from .runtime import Runtime
from .serving import Serving
from .settings import ServiceSettings


def create_app(
    settings: ServiceSettings,
    index: Index | None = None,
    verified: VerifyReport | None = None,
    shard_groups: Sequence[Any] | None = None,
) -> FastAPI:
    """The ASGI app. ``index``: an Index the caller opened already (``lorif serve`` does, to
    report a bad file before loading anything), and ``verified``: its check under
    ``settings.verify`` if the caller ran it; the app owns the index from then on.
    ``shard_groups``: Ray Serve handles of the shard groups when the app is the ingress of a
    Serve application (``service.serve_app``)."""
    rt = Runtime(settings, shard_groups)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await rt.start(index, verified)
        except LorifError as e:  # `lorif serve` reports it in one line (service.server.run)
            app.state.startup_error = e
            raise
        try:
            yield
        finally:
            await rt.stop()

    # No slash redirects: Starlette builds their Location from the Host header.
    app = FastAPI(
        title="LoRIF attribution service",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.lorif = rt
    app.state.startup_error = None
    app.state.serving = Serving.over(rt)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount(
        "/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets"
    )
    app.add_middleware(Guard, rt=rt)
    if settings.cors_origins:  # outside the guard: preflights pass, its refusals carry CORS
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    return app
