"""The scorer in a child process: priority, death and restart, shutdown, a changed index."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from indexer import Index, IndexFormatError
from service.app import create_app
from service.scorer_process import ScorerProcess, ScorerSpec
from service.settings import ServiceSettings
from tests.helpers import lorif_serve


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.1)


def test_killed_scorer_answers_503_then_restarts_with_the_same_answers(small_index):
    settings = ServiceSettings(index=str(small_index), device="cpu", cache_size=0)
    with TestClient(create_app(settings)) as c:
        rt = c.app.state.lorif
        body = {"prompt": "the king.", "k": 5, "direction": "both"}
        ask = lambda: c.post("/v1/attributions", json=body)  # noqa: E731
        before = ask()
        assert before.status_code == 200
        first = rt.current.scorer.pid
        child = psutil.Process(first)
        assert child.ppid() == os.getpid()
        assert child.nice() == psutil.Process().nice() + settings.scorer_nice

        os.kill(first, signal.SIGKILL)
        # (not child.wait(): that would reap it, and the server must see the SIGKILL)
        wait_for(lambda: not rt.scoring, 10, "the server noticed the scorer died")
        down = ask()
        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == "application/problem+json"
        assert int(down.headers["retry-after"]) > 0
        assert "restarting" in down.json()["detail"]
        not_ready = c.get("/health/ready")
        assert not_ready.status_code == 503 and "restarting" in not_ready.json()["detail"]
        assert "lorif_scorer_up 0.0" in c.get("/metrics").text

        wait_for(lambda: c.get("/health/ready").status_code == 200, 120, "scorer restarted")
        assert rt.current.scorer.pid not in (None, first) and rt.current.scorer.restarts == 1
        scraped = c.get("/metrics").text
        assert "lorif_scorer_up 1.0" in scraped and "lorif_scorer_restarts 1.0" in scraped
        after = ask()
        assert after.status_code == 200
        assert after.json()["proponents"] == before.json()["proponents"]
        assert after.json()["opponents"] == before.json()["opponents"]
        explained = c.post("/v1/explanations", json={"prompt": "the king.", "example_id": 3})
        assert explained.status_code == 200
        last = rt.current.scorer.pid
    assert not psutil.pid_exists(last), "the scorer outlived the app"


def children(server: psutil.Process) -> list[psutil.Process]:
    """The scorer and its spare, once the spare is up."""
    wait_for(lambda: len(server.children()) == 2, 30, "the scorer and a spare")
    kids = server.children()
    assert all("service.scorer_child" in " ".join(c.cmdline()) for c in kids)
    return kids


def test_scorer_and_spare_stop_with_the_server_and_after_a_kill_9_of_the_server(small_index):
    with lorif_serve(small_index) as (_, proc):
        kids = children(psutil.Process(proc.pid))
        proc.terminate()
        proc.wait(30)
        for child in kids:
            child.wait(10)  # stopped by the server's shutdown
    with lorif_serve(small_index) as (_, proc):
        kids = children(psutil.Process(proc.pid))
        proc.kill()  # no shutdown: the scorer and spare must notice their parent is gone
        proc.wait(10)
        for child in kids:
            child.wait(30)


def test_scorer_imports_our_packages_not_the_working_directorys(small_index, tmp_path):
    """Started from a project that has a package called ``service`` of its own."""
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "__init__.py").write_text("raise ImportError('not lorif')\n")
    with lorif_serve(small_index, cwd=tmp_path) as (url, _):
        body = {"prompt": "the king.", "k": 2}
        assert httpx.post(f"{url}/v1/attributions", json=body, timeout=60).status_code == 200


def test_scorer_refuses_an_index_that_changed_since_the_server_verified_it(small_index):
    with Index(small_index) as index:
        fingerprint = index.fingerprint
    spec = ScorerSpec(
        index=str(small_index),
        fingerprint="0" * len(fingerprint),
        manifest=None,
        model=None,
        device="cpu",
        threads=1,
        block_rows=64,
        resident="off",
        nice=0,
    )
    with pytest.raises(IndexFormatError, match="no longer the version the service opened"):
        ScorerProcess(spec).start()


def test_a_scorer_killed_while_idle_is_noticed_at_once(small_index):
    """No query needed: readiness and lorif_scorer_up say so within a second, the restart
    begins, and the server is ready again."""
    settings = ServiceSettings(index=str(small_index), device="cpu", cache_size=0)
    with TestClient(create_app(settings)) as c:
        rt = c.app.state.lorif
        first = rt.current.scorer.pid
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: c.get("/health/ready").status_code == 503, 2, "not ready")
        assert time.monotonic() - killed < 2
        assert "lorif_scorer_up 0.0" in c.get("/metrics").text
        with pytest.raises(psutil.NoSuchProcess):  # reaped by the server: no zombie left
            wait_for(lambda: psutil.Process(first).status() == "never", 5, "reaped")
        wait_for(lambda: c.get("/health/ready").status_code == 200, 120, "scorer restarted")
        assert rt.current.scorer.pid not in (None, first) and rt.current.scorer.restarts == 1
