"""Real processes for the tests: ``lorif serve`` and ``redis-server`` on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@contextmanager
def lorif_serve(index: str | Path, *args: str, env: dict[str, str] | None = None,
                timeout_s: float = 90) -> Iterator[tuple[str, subprocess.Popen]]:
    """``lorif serve INDEX`` in a subprocess; yields (base URL, process) once ready.

    Stops it with SIGTERM on exit; the caller may read ``proc.stdout`` afterwards.
    """
    port = free_port()
    exe = Path(sys.executable).parent / "lorif"
    proc = subprocess.Popen([str(exe), "serve", str(index), "--port", str(port), *args],
                            env={**os.environ, "LORIF_DEVICE": "cpu", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{url}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("lorif serve did not become ready:\n"
                                   + proc.stdout.read().decode()[-3000:])
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
