"""Admission, deadlines and batch independence (issue: hardening, items 4-6), through the app.

The worker thread is held busy with a stand-in job (``time.sleep`` through the batcher's own
``run_exclusive``) where a test needs a queue to form; everything else is the real service.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from indexer import Example, QueryOptions
from service.app import create_app
from service.batcher import DeadlineExceeded
from service.settings import ServiceSettings
from tests.service.test_api import metric

PROMPTS = [
    "storm night crown fool gold.",
    "the king and the queen.",
    "love death and honour.",
    "gold silver horse field war.",
    "sea ship wit grief joy.",
    "moon blood sword eye.",
]


def app_client(small_index, **settings) -> TestClient:
    """The batcher's limits do not depend on where the scorer runs: in-process here (fast
    start); the scorer process is covered by test_api and test_scorer_process."""
    settings.setdefault("scorer", "thread")
    return TestClient(create_app(ServiceSettings(index=str(small_index), device="cpu", **settings)))


def hold_worker(client: TestClient, seconds: float) -> None:
    """Keep the model's worker thread busy for ``seconds`` (returns at once)."""
    rt = client.app.state.lorif
    client.portal.start_task_soon(
        rt.current.batcher.run_exclusive, time.monotonic() + 60, time.sleep, seconds
    )
    time.sleep(0.05)


def test_explanations_are_admitted_up_to_the_queue_and_attributions_still_answer(small_index):
    with app_client(small_index, explain_queue=3, cache_size=0) as c:  # one slot: hold_worker
        hold_worker(c, 1.0)
        body = {"prompt": "the king and the queen.", "example_id": 3}
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(c.post, "/v1/explanations", json=body) for _ in range(6)]
            attribution = pool.submit(c.post, "/v1/attributions", json={"prompt": "the sea."})
            codes = sorted(f.result().status_code for f in futures)
            assert attribution.result().status_code == 200
        assert set(codes) == {200, 429} and codes.count(200) >= 2, codes
        busy = next(f.result() for f in futures if f.result().status_code == 429)
        assert int(busy.headers["retry-after"]) >= 1
        assert busy.headers["content-type"] == "application/problem+json"
        assert "explanation queue is full" in busy.json()["detail"]


def test_a_job_past_its_deadline_is_dropped_not_computed(small_index):
    with app_client(small_index) as c:
        rt = c.app.state.lorif
        scans = metric(c, "lorif_scans_total")

        async def late() -> BaseException | None:
            future = rt.current.batcher.submit(
                "late", Example(completion="the king."), QueryOptions(k=3), 4, time.monotonic() - 1
            )
            try:
                await future
            except DeadlineExceeded as e:
                return e
            return None

        assert isinstance(c.portal.call(late), DeadlineExceeded)
        assert rt.current.batcher.dropped == 1 and metric(c, "lorif_scans_total") == scans


def test_a_result_finished_after_its_request_gave_up_is_cached(small_index):
    with app_client(small_index, request_timeout_s=0.3) as c:
        hold_worker(c, 0.8)  # the batch forms at once, the worker starts it at 0.8 s
        body = {"prompt": "crown fool and the night.", "k": 3}
        assert c.post("/v1/attributions", json=body).status_code == 504
        time.sleep(1.0)
        again = c.post("/v1/attributions", json=body)
        assert again.status_code == 200 and again.json()["cached"] is True


@pytest.mark.parametrize("prompt", PROMPTS)
def test_low_rank_answers_do_not_depend_on_batch_mates(small_index, prompt):
    settings = {"query_rank": 1, "candidates": 1, "cache_size": 0, "max_wait_ms": 300}
    with app_client(small_index, **settings) as c:
        alone = c.post(
            "/v1/attributions", json={"prompt": prompt, "k": 5, "direction": "both"}
        ).json()
        with ThreadPoolExecutor(2) as pool:
            small = pool.submit(
                c.post, "/v1/attributions", json={"prompt": prompt, "k": 5, "direction": "both"}
            )
            pool.submit(c.post, "/v1/attributions", json={"prompt": "gold.", "k": 1000})
            together = small.result().json()
        assert metric(c, 'lorif_batch_size_bucket{le="1.0"}') < metric(c, "lorif_batch_size_count")
    for direction in ("proponents", "opponents"):
        assert [r["example_id"] for r in together[direction]] == [
            r["example_id"] for r in alone[direction]
        ]


def test_non_finite_scores_are_refused_and_never_cached(small_index, tmp_path):
    """A damaged factor row served without verification: the warm-up's NaN scores stop the
    start-up with a clear error, and a NaN answer is never served from a cache."""
    import shutil

    import numpy as np

    from indexer.errors import IndexFormatError
    from service.cache import deserialize, serialize
    from service.scorer import Scored
    from tests.indexer.storage.test_integrity import write_nan_factor

    damaged = tmp_path / "nan.h5"
    shutil.copy(small_index, damaged)
    write_nan_factor(damaged)
    with (
        pytest.raises(IndexFormatError, match="scored NaN or infinity"),
        app_client(damaged, verify="off"),
    ):
        pass
    ids = np.arange(3)
    bad = Scored(ids, np.array([1.0, np.nan, 0.0], np.float32), ids, np.zeros(3, np.float32), 0, 0)
    assert not bad.finite and deserialize(serialize(bad)) is None
