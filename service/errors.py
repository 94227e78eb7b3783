"""RFC 9457 problem+json responses for every error the API returns, 500s included."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"
UNPARSED = "There was an error parsing the body"  # FastAPI's 400 for what json.loads raised
log = logging.getLogger("lorif")


class ApiError(Exception):
    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers


def problem(
    status: int,
    title: str,
    detail: str,
    instance: str = "",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, request.url.path, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return problem(
            422, "Invalid request", f"{where}: {first['msg']}", request.url.path, errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == UNPARSED:  # invalid UTF-8, deep nesting
            detail = "body: not a JSON document this server reads (UTF-8, nested < 1000 deep)"
            return problem(422, "Invalid request", detail, request.url.path)
        return problem(
            exc.status_code,
            _phrase(exc.status_code),
            str(exc.detail),
            request.url.path,
            getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(
            500,
            "Internal Server Error",
            f"{type(exc).__name__} (see the server log)",
            request.url.path,
        )


@contextlib.contextmanager
def admitted(what: str, timeout: float) -> Iterator[None]:
    """Overloaded -> 429 with Retry-After; a scorer that is restarting -> 503 with
    Retry-After; a missed deadline -> 504 ("{what} within ...")."""
    from .batcher import DeadlineExceeded, Overloaded
    from .scorer_process import ScorerUnavailable

    try:
        yield
    except Overloaded as e:
        raise ApiError(
            429, "Too many requests", str(e), headers={"Retry-After": str(e.retry_after)}
        ) from None
    except ScorerUnavailable as e:
        raise ApiError(
            503, "Scorer unavailable", str(e), headers={"Retry-After": str(e.retry_after)}
        ) from None
    except (TimeoutError, DeadlineExceeded):
        raise ApiError(504, "Deadline exceeded", f"{what} within {timeout} s") from None
