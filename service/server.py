"""Running the app under uvicorn, with the limits a server exposed to slow or hostile clients
needs: a connection must send its request headers within ``header_timeout_s`` (uvicorn itself
only times out idle keep-alive connections), bodies are bounded in time and size by the guard,
and at most ``max_connections`` connections and requests are served at once (503 above)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from indexer import ConfigError

from .settings import ServiceSettings

log = logging.getLogger("lorif")


class HeaderTimeout:
    """Mixin for uvicorn's HTTP protocols (h11, httptools): closes a connection whose request
    headers do not all arrive within ``header_timeout_s`` of its first byte (or of the
    connection, for the first request)."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    logger: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the first byte of a keep-alive connection's next request
        before = self.cycle
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not before:  # a complete request line and headers were parsed
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info(
                "closing a connection whose request headers took over %.1f s", self.header_timeout_s
            )
            self.transport.close()


class HeaderTimeoutProtocol(HeaderTimeout, H11Protocol):
    """h11 (pure Python) with the header timeout."""


class HeaderTimeoutHttpTools(HeaderTimeout, HttpToolsProtocol):
    """httptools (C parser) with the header timeout."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ConfigError naming the address (before anything slow loads)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
    # without it every response waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror} (is another server "
            "running there? pass --port)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(
    app: FastAPI,
    settings: ServiceSettings,
    sock: socket.socket | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``app`` in this process until SIGINT/SIGTERM (graceful shutdown)."""
    http = settings.http
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    base = HeaderTimeoutHttpTools if http == "httptools" else HeaderTimeoutProtocol
    protocol: Any = type("LorifHTTP", (base,), {"header_timeout_s": settings.header_timeout_s})
    config = uvicorn.Config(
        _Lifespan(app, _url(settings.host, settings.port)),
        host=settings.host,
        port=settings.port,
        workers=1,
        http=protocol,
        loop=settings.loop,
        limit_concurrency=settings.max_connections,
        log_level=log_level,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock or bind(settings.host, settings.port)])
    except SystemExit:
        if app.state.startup_error is None:
            raise
    if app.state.startup_error is not None:  # the CLI prints it in one line (exit code 2)
        raise app.state.startup_error


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class _Lifespan:
    """The app, saying where it listens once it is ready, and without the 40-line traceback
    uvicorn would log for a start-up failure the library explains in one line
    (``app.state.startup_error``, raised again by ``run``)."""

    def __init__(self, app: FastAPI, url: str):
        self.app, self.url = app, url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.app.state.startup_error:
                message = {**message, "message": ""}
            if message["type"] == "lifespan.startup.complete":
                log.info("ready: the page at %s, the API docs at %sdocs", self.url, self.url)
            await send(message)

        await self.app(scope, receive, quiet)
