"""The listening socket ``lorif serve`` binds itself (to report a taken port before loading)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from indexer.errors import ConfigError
from service.server import bind


def test_accepted_connections_get_tcp_nodelay():
    """asyncio disables Nagle only for sockets whose proto is TCP; a plain socket() has proto 0
    and every response then waited ~40 ms for a delayed ACK."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    nodelay = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport):
            s = transport.get_extra_info("socket")
            nodelay.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main():
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.1)
        writer.close()
        server.close()

    asyncio.run(main())
    assert nodelay and nodelay[0] != 0


def test_a_taken_port_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind("127.0.0.1", port)
