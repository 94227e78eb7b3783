"""App factory: ``create_app(settings)`` wires the runtime (loaded in the lifespan, warmed up
before ready), the guard middleware, problem+json errors, the routers and the static files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from . import errors, middleware
from .routes import ROUTERS
from .routes.page import STATIC
from .runtime import Runtime
from .settings import ServiceSettings


def create_app(settings: ServiceSettings) -> FastAPI:
    rt = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        try:
            yield
        finally:
            await rt.stop()

    app = FastAPI(title="LoRIF attribution service", version="1", lifespan=lifespan)
    app.state.lorif = rt
    errors.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    middleware.install(app, rt)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
