"""Sharded serving on a real local Ray cluster (Ray Serve, CPU): the cluster's answers equal
the single process's; a killed shard-group replica costs no request with 2 replicas and comes
back by itself; the applications are gone after shutdown."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.helpers import free_port

ray = pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")

PROMPTS = [f"the king {w} the sea." for w in ("loves", "fears", "rules", "leaves")]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with Serve's HTTP proxy on a free port (yielded)."""
    from ray import serve

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def settings(index, **extra) -> ServiceSettings:
    return ServiceSettings(index=str(index), device="cpu", cache_size=0, **extra)


def ask(client: TestClient | httpx.Client, prompt: str) -> dict:
    r = client.post("/v1/attributions", json={"prompt": prompt, "k": 5, "direction": "both"})
    assert r.status_code == 200, r.text
    return r.json()


def timed(client: TestClient, prompt: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    return ask(client, prompt), time.monotonic() - t0


def same(a: dict, b: dict) -> None:
    for side in ("proponents", "opponents"):
        assert [r["example_id"] for r in a[side]] == [r["example_id"] for r in b[side]]
        np.testing.assert_allclose(
            [r["score"] for r in a[side]], [r["score"] for r in b[side]], rtol=1e-5, atol=1e-6
        )


def replicas(group: int) -> list[psutil.Process]:
    name = f"ServeReplica:lorif-shards-{group}:ShardGroup"
    return [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if name in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def no_replicas_left() -> None:
    """Wait for the replicas of an earlier test's deleted applications to exit (a replica
    shuts down gracefully, so on a loaded machine one can outlive serve.delete by seconds):
    the counts below are of this test's replicas only."""
    deadline = time.monotonic() + 60
    while (replicas(0) or replicas(1)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not (replicas(0) or replicas(1)), "replicas of an earlier test are still running"


def test_cluster_answers_as_one_process(local_ray, small_sharded_index):
    with TestClient(create_app(settings(small_sharded_index, scorer="thread"))) as c:
        want = [ask(c, p) for p in PROMPTS * 8]
    cluster = settings(small_sharded_index, cluster="local", cluster_cpus=0.25)
    with TestClient(create_app(cluster)) as c:
        assert c.get("/v1/index").json()["scorer"] == "cluster"
        same(ask(c, PROMPTS[0]), want[0])
        with ThreadPoolExecutor(32) as pool:  # 32 at once: batched, fanned out, merged
            got = list(pool.map(lambda p: ask(c, p), PROMPTS * 8))
        for a, b in zip(got, want, strict=True):
            same(a, b)
    from ray import serve

    assert not [a for a in serve.status().applications if a.startswith("lorif-shards")]


def test_a_killed_replica_costs_no_request(local_ray, small_sharded_index):
    no_replicas_left()
    cluster = settings(small_sharded_index, cluster="local", cluster_replicas=2, cluster_cpus=0.25)
    with TestClient(create_app(cluster)) as c:
        want = {p: ask(c, p) for p in PROMPTS}
        victims = replicas(0)
        assert len(victims) == 2

        def kill_soon() -> float:  # while the requests below are in flight
            time.sleep(0.5)
            victims[0].send_signal(signal.SIGKILL)
            return time.monotonic()

        with ThreadPoolExecutor(9) as pool:
            killer = pool.submit(kill_soon)
            got = list(pool.map(lambda p: (p, timed(c, p)), PROMPTS * 200))
            assert killer.result() < time.monotonic() - 0.5, "the load ended before the kill"
        for p, (answer, _) in got:
            same(answer, want[p])
        # the other replica answered: nobody waited for the replacement (~10 s with one)
        assert max(seconds for _, (_, seconds) in got) < 5
        deadline = time.monotonic() + 60
        while len(replicas(0)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(replicas(0)) == 2, "the killed replica did not come back"


def test_with_one_replica_a_kill_costs_a_wait_or_a_503_never_a_wrong_answer(
    local_ray, small_sharded_index
):
    no_replicas_left()
    cluster = settings(small_sharded_index, cluster="local", cluster_cpus=0.25)
    with TestClient(create_app(cluster)) as c:
        want = ask(c, PROMPTS[0])
        (victim,) = replicas(1)
        victim.send_signal(signal.SIGKILL)
        codes, waits = [], []
        for _ in range(20):
            t0 = time.monotonic()
            r = c.post("/v1/attributions", json={"prompt": PROMPTS[0], "k": 5})
            waits.append(time.monotonic() - t0)
            codes.append(r.status_code)
            if r.status_code == 503:  # a group without a running replica: no partial answer
                assert r.headers["content-type"] == "application/problem+json"
                assert int(r.headers["retry-after"]) > 0
            else:
                assert r.status_code == 200, r.text
                same({**r.json(), "opponents": want["opponents"]}, want)
            time.sleep(0.2)
        assert codes[-1] == 200 and max(waits) < 30, (codes, waits)
        deadline = time.monotonic() + 60
        while (
            not (replicas(1) and replicas(1)[0].pid != victim.pid) and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert replicas(1) and replicas(1)[0].pid != victim.pid, "no replacement replica"


def test_a_group_without_replicas_is_a_503_never_a_partial_answer(local_ray, small_sharded_index):
    """Shard group 1 removed behind the server's back: no replica can answer its rows, so
    queries get 503 + Retry-After and /health/ready says not ready (a top-k of group 0 alone
    would look like an answer and be wrong)."""
    from ray import serve

    with TestClient(
        create_app(settings(small_sharded_index, cluster="local", cluster_cpus=0.25))
    ) as c:
        ask(c, PROMPTS[0])
        serve.delete("lorif-shards-1")
        time.sleep(1.5)  # the server reads Serve's state every 0.5 s
        ready = c.get("/health/ready")
        assert ready.status_code == 503, ready.text
        for p in PROMPTS[1:]:  # not cached: they need a scan
            r = c.post("/v1/attributions", json={"prompt": p, "k": 5})
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert int(r.headers["retry-after"]) > 0
        assert c.get("/health/live").status_code == 200


def test_the_serve_application_answers_as_one_process(local_ray, small_sharded_index):
    """The whole service as one Serve application (what a RayService deploys): the same app
    as the ingress deployment, two ShardGroup deployments, HTTP from Serve's proxy."""
    from ray import serve

    from service.serve_app import build

    with TestClient(create_app(settings(small_sharded_index, scorer="thread"))) as c:
        want = {p: ask(c, p) for p in PROMPTS}
    args = {"index": str(small_sharded_index), "device": "cpu", "cluster_cpus": 0.25}
    serve.run(build(args), name="lorif", route_prefix="/")
    try:
        deployments = serve.status().applications["lorif"].deployments
        assert sorted(deployments) == ["Ingress", "ShardGroup0", "ShardGroup1"]
        with httpx.Client(base_url=f"http://127.0.0.1:{local_ray}", timeout=60) as c:
            assert c.get("/health/ready").status_code == 200
            assert c.get("/v1/index").json()["scorer"] == "cluster"
            with ThreadPoolExecutor(8) as pool:
                got = list(pool.map(lambda p: (p, ask(c, p)), PROMPTS * 4))
            for p, answer in got:
                same(answer, want[p])
            bad = c.post("/v1/attributions", json={"prompt": "", "k": 5})
            assert bad.status_code == 422
            assert bad.headers["content-type"] == "application/problem+json"
            assert "lorif_scans_total" in c.get("/metrics").text
    finally:
        serve.delete("lorif")


def test_the_cluster_follows_index_add_under_load(local_ray, grown, tmp_path):
    """16 clients while `lorif index add` publishes: only 200s, the shard groups switch to the
    new version without a redeploy, and its answers equal one process's on the grown index."""
    from .conftest import copy_of, lorif

    no_replicas_left()
    index = copy_of(grown, tmp_path)
    cluster = settings(index, cluster="local", cluster_cpus=0.25, watch_s=0.5)
    with TestClient(create_app(cluster)) as c:
        before = [p.pid for p in replicas(0) + replicas(1)]
        stop, codes = threading.Event(), Counter[int]()

        def client(i: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"prompt": f"the king {i} fears {n % 5} storms.", "k": 3}
                codes[c.post("/v1/attributions", json=body).status_code] += 1

        with ThreadPoolExecutor(16) as pool:
            for i in range(16):
                pool.submit(client, i)
            time.sleep(1.0)
            lorif("index", "add", str(index), "--data", str(grown[1]), "--device", "cpu")
            deadline = time.monotonic() + 60
            while c.get("/v1/index").json()["version"]["rows"] != 60:
                assert time.monotonic() < deadline, "the new version within 60 s"
                time.sleep(0.1)
            time.sleep(1.0)
            stop.set()
        assert set(codes) == {200}, codes
        assert sorted(p.pid for p in replicas(0) + replicas(1)) == sorted(before)  # no redeploy
        got = [ask(c, p) for p in PROMPTS]
    with TestClient(create_app(settings(index, scorer="thread"))) as one:
        for a, p in zip(got, PROMPTS, strict=True):
            same(a, ask(one, p))
            assert a["index_fingerprint"] == one.get("/v1/index").json()["fingerprint"]
