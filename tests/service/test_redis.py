"""The Redis cache against a real redis-server started here on a free port."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.helpers import free_port, start_redis

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def metric(client, name: str, label: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{result="{label}"}}'):
            return float(line.split()[1])
    return 0.0


def redis_settings(small_index, port: int, **settings) -> ServiceSettings:
    return ServiceSettings(
        index=str(small_index),
        device="cpu",
        scorer="thread",
        redis_url=f"redis://127.0.0.1:{port}/0",
        **settings,
    )


def test_cache_survives_redis_death_and_recovers(small_index):
    port = free_port()
    redis = start_redis(port)
    settings = redis_settings(small_index, port, redis_breaker_reset_s=0.5)
    try:
        with TestClient(create_app(settings)) as c:
            ask = lambda p: c.post("/v1/attributions", json={"prompt": p, "k": 3})  # noqa: E731
            first, second = ask("the king."), ask("the king.")
            assert first.json()["cached"] is False and second.json()["cached"] is True
            assert second.json()["proponents"] == first.json()["proponents"]
            # a second replica sharing the Redis sees the cached value
            with TestClient(create_app(settings)) as other:
                r = other.post("/v1/attributions", json={"prompt": "the king.", "k": 3})
                assert r.json()["cached"] is True

            redis.kill()
            redis.wait()
            answers = [ask(f"the queen {i}.") for i in range(6)]
            assert all(a.status_code == 200 for a in answers)
            assert not any(a.json()["cached"] for a in answers)
            # what this replica answered before keeps coming from its near cache
            king = ask("the king.")
            assert king.json()["cached"] is True
            assert king.json()["proponents"] == first.json()["proponents"]
            assert metric(c, "lorif_cache_total", "error") >= 3
            ready = c.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"

            redis = start_redis(port)
            # readiness tries Redis itself: no query needs to touch it first
            assert c.get("/health/ready").json()["status"] == "ready"
            time.sleep(0.6)  # breaker half-opens
            ask("the moon.")
            assert ask("the moon.").json()["cached"] is True
            assert c.get("/health/ready").json()["status"] == "ready"
    finally:
        redis.kill()
        redis.wait()


def test_redis_connections_are_opened_at_start_and_bounded(small_index):
    import redis as redis_py

    port = free_port()
    redis = start_redis(port)
    settings = redis_settings(
        small_index, port, redis_connections=4, redis_timeout_s=1.0, cache_size=0
    )
    probe = redis_py.Redis(port=port)
    others = lambda: len(probe.client_list()) - 1  # noqa: E731 - all but the probe itself
    try:
        with TestClient(create_app(settings)) as c:
            assert others() == 4, "the pool is not opened at start"
            body = {"prompt": "the king.", "k": 3}
            assert c.post("/v1/attributions", json=body).status_code == 200
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda _: c.post("/v1/attributions", json=body), range(64)))
            assert all(a.status_code == 200 and a.json()["cached"] for a in answers)
            assert others() <= 4
    finally:
        probe.close()
        redis.kill()
        redis.wait()


def test_near_cache_answers_without_a_round_trip(small_index):
    """With Redis, recent answers come from the process's own LRU: no GET reaches Redis; an
    answer another replica cached comes from Redis once, then from the near cache."""
    import redis as redis_py

    port = free_port()
    redis = start_redis(port)
    probe = redis_py.Redis(port=port)
    gets = lambda: probe.info("commandstats").get("cmdstat_get", {}).get("calls", 0)  # noqa: E731
    settings = redis_settings(small_index, port)
    body = {"prompt": "the king.", "k": 3}
    try:
        with TestClient(create_app(settings)) as c:
            first = c.post("/v1/attributions", json=body).json()
            before = gets()
            again = [c.post("/v1/attributions", json=body).json() for _ in range(5)]
            assert all(a["cached"] and a["proponents"] == first["proponents"] for a in again)
            assert gets() == before
            with TestClient(create_app(settings)) as other:
                before = gets()
                for _ in range(3):
                    assert other.post("/v1/attributions", json=body).json()["cached"] is True
                assert gets() == before + 1
        off = redis_settings(small_index, port, cache_size=0)
        with TestClient(create_app(off)) as c:
            before = gets()
            for _ in range(3):
                assert c.post("/v1/attributions", json=body).json()["cached"] is True
            assert gets() == before + 3
    finally:
        probe.close()
        redis.kill()
        redis.wait()
