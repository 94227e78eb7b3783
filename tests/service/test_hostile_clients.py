"""A real ``lorif serve`` against what a hostile or unlucky client sends, and against damaged
files and a shared real Redis (issue: hardening, items 1, 2, 3, 7, 8)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import httpx
import pytest

from tests.helpers import free_port, lorif_serve, start_redis
from tests.indexer.storage.test_integrity import flip_factor_byte, write_nan_factor

LORIF = str(Path(sys.executable).parent / "lorif")


def chunks(total: int, size: int = 64 * 1024):
    """A JSON body sent with Transfer-Encoding: chunked (no Content-Length)."""
    yield b'{"prompt": "'
    for _ in range(total // size):
        yield b"a" * size
    yield b'"}'


def test_chunked_bodies_over_the_limit_are_refused_as_they_arrive(small_index):
    with lorif_serve(small_index) as (url, _):
        for total in (2 << 20, 50 << 20):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(1) as pool:
                big = pool.submit(
                    httpx.post,
                    f"{url}/v1/attributions",
                    content=chunks(total),
                    headers={"content-type": "application/json"},
                    timeout=60,
                )
                time.sleep(0.05)
                live = httpx.get(f"{url}/health/live", timeout=5)
                r = big.result()
            assert live.status_code == 200
            assert r.status_code == 413 and "bytes" in r.json()["detail"], r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert time.perf_counter() - t0 < 5, f"{total} bytes took {time.perf_counter() - t0}"


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_slow_headers_are_cut_off_and_slow_bodies_get_408(small_index, http):
    env = {"LORIF_HEADER_TIMEOUT_S": "1", "LORIF_BODY_TIMEOUT_S": "1", "LORIF_HTTP": http}
    with lorif_serve(small_index, env=env) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(
            b"POST /v1/attributions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        time.sleep(2.5)
        for s in slow:
            s.settimeout(2)
            assert s.recv(1024) == b"", "a connection trickling headers stayed open"
            s.close()
        body.settimeout(5)
        answer = body.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"connection: close" in answer.lower()
        # the rest of the slow body is not waited for (the header timer used to re-arm)
        with contextlib.suppress(OSError):
            body.sendall(b" ")
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert body.recv(4096) == b"", "the connection stayed open after the 408"
        assert time.monotonic() - t0 < 1.5
        body.close()
        assert httpx.get(f"{url}/health/live").status_code == 200


def serve_fails(*args: str, timeout: float = 60) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [LORIF, "serve", *args, "--device", "cpu"], capture_output=True, text=True, timeout=timeout
    )
    return res.returncode, res.stderr.strip(), time.perf_counter() - t0


def test_start_up_failures_are_one_line_and_early(small_index, tmp_path):
    damaged = tmp_path / "damaged.h5"
    shutil.copy(small_index, damaged)
    flip_factor_byte(damaged)
    nan = tmp_path / "nan.h5"
    shutil.copy(small_index, nan)
    write_nan_factor(nan)
    # the four that need no timing start side by side (each is a process start)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        missing, directory, bad, nonfinite = pool.map(
            lambda args: serve_fails(*args),
            [
                (str(tmp_path / "missing.h5"),),
                (str(tmp_path),),
                (str(damaged), "--port", str(free_port())),
                (str(nan), "--port", str(free_port()), "--verify", "fast"),
            ],
        )
    code, err, _ = missing
    assert code == 2 and err == f"error: index not found: {tmp_path / 'missing.h5'}"
    code, err, _ = directory
    assert code == 2 and err == f"error: {tmp_path} is a directory, not an index (no manifest.json)"
    code, err, _ = bad
    assert code == 2 and "do not match their checksum" in err and len(err.splitlines()) == 1
    with socket.socket() as taken:  # alone: how early it fails is measured
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err, seconds = serve_fails(str(small_index), "--port", str(port))
    assert code == 2 and err.startswith(f"error: cannot listen on 127.0.0.1:{port}"), err
    assert seconds < 20 and len(err.splitlines()) == 1
    code, err, _ = nonfinite
    last = err.splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert last.startswith("error: ") and "scored NaN or infinity" in last, err[-3000:]


@pytest.mark.redis
def test_a_damaged_copy_cannot_poison_a_shared_cache(small_index, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    damaged = tmp_path / "damaged.h5"
    shutil.copy(small_index, damaged)
    flip_factor_byte(damaged, range(1, 32768, 2))  # high bytes of bf16: sign and exponent
    port = free_port()
    redis = start_redis(port)
    env = {"LORIF_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    body = {"prompt": "the king and the queen.", "k": 5}
    try:
        with lorif_serve(damaged, "--verify", "fast", env=env) as (url, _):
            bad = httpx.post(f"{url}/v1/attributions", json=body).json()
            assert not bad["cached"]
        with lorif_serve(small_index, env=env) as (url, _):
            good = httpx.post(f"{url}/v1/attributions", json=body).json()
            again = httpx.post(f"{url}/v1/attributions", json=body).json()
    finally:
        redis.kill()
        redis.wait()
    assert good["index_fingerprint"] == bad["index_fingerprint"]  # same claimed fingerprint
    assert not good["cached"] and again["cached"]  # its own answer, then its own cache entry
    assert [r["score"] for r in good["proponents"]] != [r["score"] for r in bad["proponents"]]


@pytest.mark.parametrize("meta", ["{not json", "[1,2]"])
def test_bad_metadata_rows_never_give_a_500(small_index, tmp_path, meta):
    broken = tmp_path / "meta.h5"
    shutil.copy(small_index, broken)
    with h5py.File(broken, "r+") as f:
        f["examples/meta"][7] = meta
    code, err, _ = serve_fails(str(broken), "--verify", "fast", "--port", str(free_port()))
    assert code == 2 and "examples 0..59 do not match their checksum" in err
    with lorif_serve(broken, "--verify", "off") as (url, _):
        example = httpx.get(f"{url}/v1/examples/7")
        assert example.status_code == 200 and example.json()["meta"] == {"_unparsed": meta}
        r = httpx.post(f"{url}/v1/attributions", json={"prompt": "the king.", "k": 60})
        assert r.status_code == 200
        assert {"_unparsed": meta} in [x["meta"] for x in r.json()["proponents"]]
