"""The HTTP guard in front of every route: API key, body size and media type on /v1, readiness,
the page's security headers, and the per-route response counter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from . import errors
from .runtime import Runtime

# The page loads only its own files; data is rendered as text (see static/app.js), and this
# policy makes any markup that slipped through inert as well.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

CallNext = Callable[[Request], Awaitable[Response]]


def install(app: FastAPI, rt: Runtime) -> None:
    settings = rt.settings

    @app.middleware("http")
    async def guard(request: Request, call_next: CallNext) -> Response:
        path = request.url.path
        if path.startswith("/v1/"):
            if settings.api_key and request.headers.get("x-api-key") != settings.api_key:
                return errors.problem(401, "Unauthorized", "missing or wrong X-API-Key", path)
            if request.method == "POST":
                size = request.headers.get("content-length")
                if size is not None and size.isdigit() and int(size) > settings.max_body_bytes:
                    return errors.problem(
                        413,
                        "Request body too large",
                        f"at most {settings.max_body_bytes} bytes",
                        path,
                    )
                ctype = request.headers.get("content-type", "").split(";")[0].strip()
                if ctype != "application/json":
                    return errors.problem(
                        415, "Unsupported media type", "send the body as application/json", path
                    )
            if not rt.ready:
                return errors.problem(
                    503, "Not ready", "the index is loading", path, headers={"Retry-After": "5"}
                )
        response = await call_next(request)
        if path == "/" or path.startswith("/static/"):
            response.headers.update(PAGE_HEADERS)
        route = request.scope.get("route")
        rt.metrics.responses.labels(
            getattr(route, "path", "unmatched"), str(response.status_code)
        ).inc()
        return response
