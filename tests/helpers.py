"""Shared test helpers: corpora and tiny models, jsonl files, the CLI in-process, and real
processes (``lorif serve`` and ``redis-server``) on free ports."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from lorif_demo.toy import tiny_lm

ROOT = Path(__file__).resolve().parents[1]  # the checkout
WORDS = (
    "king queen castle sword night moon love death crown blood storm sea ship honour "
    "grief joy fool wit gold silver horse field war peace heart tongue eye hand"
).split()


def make_corpus(n: int, seed: int = 0) -> list[str]:
    """Short varied sentences (lengths 3..25 words) over a small vocabulary."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) + "." for _ in range(n)]


def make_model(arch: str, tokenizer, seed: int = 0) -> torch.nn.Module:
    return tiny_lm(arch, len(tokenizer), hidden=32, layers=2, heads=4, seed=seed)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``lorif ARGS`` in this process: (exit code, stdout, stderr)."""
    from lorif_cli.main import main

    monkeypatch.setattr(sys, "argv", ["lorif", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, pattern: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


LOGS: dict[int, Any] = {}  # a lorif_serve process's output file, by pid


def server_log(proc: subprocess.Popen) -> str:
    """What a ``lorif_serve`` process has written so far (stdout and stderr)."""
    f = LOGS[proc.pid]
    f.seek(0)
    return bytes(f.read()).decode(errors="replace")


@contextmanager
def lorif_serve(
    index: str | Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 90,
    cwd: str | Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``lorif serve INDEX`` in a subprocess; yields (base URL, process) once ready.

    Stops it with SIGTERM on exit; ``server_log(proc)`` is its output so far. The output goes
    to a file, not a pipe: under load the access log filled an unread pipe and blocked the
    server's event loop in a write.
    """
    port = free_port()
    exe = Path(sys.executable).parent / "lorif"
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read after the server stops
    proc = subprocess.Popen(
        [str(exe), "serve", str(index), "--port", str(port), *args],
        env={**os.environ, "LORIF_DEVICE": "cpu", **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )
    LOGS[proc.pid] = log
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
                raise RuntimeError("lorif serve did not become ready:\n" + server_log(proc)[-3000:])
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
