"""The guard in front of every route (plain ASGI, so it can watch the request body as it
arrives): the API key, the media type, the body size limit enforced on the bytes actually
received (chunked bodies included) and a body deadline, readiness, the pages' security headers,
and the per-route response counter."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import errors
from .runtime import Runtime

# The page loads only its own files; data is rendered as text (see static/app.js), and this
# policy makes any markup that slipped through inert as well.
PAGE_CSP = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
# Swagger UI (served from the swagger-ui-bundle-v2 package) sets inline styles and data: icons.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
DOC_PATHS = ("/docs", "/openapi.json")
ADMIN = "/v1/admin/"
CLOSE = {"Connection": "close"}  # uvicorn closes the connection after such a response


class Guard:
    def __init__(self, app: ASGIApp, rt: Runtime):
        self.app, self.rt = app, rt
        key = rt.settings.api_key
        self.key = key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        refusal = self._refusal(scope, path)
        if refusal is not None:
            await refusal(scope, receive, send)
            self._count(scope, refusal.status_code)
            return
        status = [0]  # 0 until the response starts

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *self._headers(path)]
            await send(message)

        await self.app(scope, self._limited(receive, status), send_with_headers)
        self._count(scope, status[0])

    def _refusal(self, scope: Scope, path: str) -> errors.JSONResponse | None:
        """The error response for a request refused before it reaches a route, else None."""
        settings, headers = self.rt.settings, _headers(scope)
        protected = path.startswith("/v1/") or (
            path.startswith(DOC_PATHS) and not settings.public_docs
        )
        if self.key is not None and protected:
            given = headers.get("x-api-key", "").encode()
            if not hmac.compare_digest(given, self.key):
                return errors.problem(401, "Unauthorized", "missing or wrong X-API-Key", path)
        size = headers.get("content-length")  # any path, any method
        if size is not None and size.isdigit() and int(size) > settings.max_body_bytes:
            return _too_large(settings.max_body_bytes, path)
        if not path.startswith("/v1/"):
            return None
        if scope["method"] == "POST" and not path.startswith(ADMIN):  # admin calls: no body
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return errors.problem(
                    415, "Unsupported media type", "send the body as application/json", path
                )
        if not self.rt.ready:
            return errors.problem(
                503, "Not ready", "the index is loading", path, headers={"Retry-After": "5"}
            )
        return None

    def _limited(self, receive: Receive, status: list[int]) -> Receive:
        """``receive`` that refuses a body over the limit (413) or slower than the body
        deadline (408) as it arrives, whatever Content-Length said; the connection is closed
        after the refusal (the rest of the body is not waited for). Once a response has
        started (``status[0]``: a route that never reads the body, answering while the
        server listens for a disconnect), it ends the request as a disconnect instead."""
        limit, timeout = self.rt.settings.max_body_bytes, self.rt.settings.body_timeout_s
        received, deadline = 0, asyncio.get_running_loop().time() + timeout

        async def receive_limited() -> Message:
            nonlocal received
            try:
                # timeout_at, not wait_for: wait_for wraps receive() in a task of its own, an
                # extra event-loop turn per request (under a burst, a wait behind all the rest)
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                if status[0]:
                    return {"type": "http.disconnect"}
                raise HTTPException(
                    408, f"the request body did not arrive within {timeout} s", CLOSE
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if status[0]:
                        return {"type": "http.disconnect"}
                    raise HTTPException(413, f"the request body is over {limit} bytes", CLOSE)
            return message

        return receive_limited

    @staticmethod
    def _headers(path: str) -> list[tuple[bytes, bytes]]:
        if path.startswith("/docs"):
            return [(b"content-security-policy", DOCS_CSP.encode()), *COMMON_HEADERS]
        if path == "/" or path.startswith("/static/"):
            return [(b"content-security-policy", PAGE_CSP.encode()), *COMMON_HEADERS]
        return COMMON_HEADERS

    def _count(self, scope: Scope, status: int) -> None:
        status = status or 500
        route = scope.get("route")
        self.rt.metrics.responses.labels(getattr(route, "path", "unmatched"), str(status)).inc()


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _too_large(limit: int, path: str) -> Any:
    return errors.problem(
        413, "Request body too large", f"at most {limit} bytes", path, headers=CLOSE
    )
