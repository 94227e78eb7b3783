"""The HTTP service against the reference scorer, its validation and its batching."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer.data import Example
from service.app import create_app
from service.settings import ServiceSettings

PROMPTS = ["the king and the queen.", "storm night crown fool gold.", "love death and honour."]


@pytest.fixture(scope="module", params=["process", "thread"])
def client(small_index, request):
    app = create_app(
        ServiceSettings(
            index=str(small_index),
            device="cpu",
            scorer=request.param,
            max_wait_ms=50,
            max_prompt_tokens=64,
            max_body_bytes=4096,
        )
    )
    with TestClient(app) as c:
        yield c


def ref_top(engine, example, k):
    res = engine.score([example], k=k)
    return (
        res.proponent_ids[0],
        res.proponent_scores[0],
        res.opponent_ids[0],
        res.opponent_scores[0],
    )


def assert_same(body, ref, k):
    ids, scores, oids, oscores = ref
    got = [(r["example_id"], r["score"]) for r in body["proponents"]]
    assert [i for i, _ in got] == list(ids[:k])
    np.testing.assert_allclose([s for _, s in got], scores[:k], rtol=1e-5)
    got = [(r["example_id"], r["score"]) for r in body["opponents"]]
    assert [i for i, _ in got] == list(oids[:k])
    np.testing.assert_allclose([s for _, s in got], oscores[:k], rtol=1e-5)


def test_results_equal_reference_scorer_unbatched_and_batched(client, reference):
    for prompt in PROMPTS:  # one at a time
        body = client.post(
            "/v1/attributions", json={"prompt": prompt, "k": 5, "direction": "both"}
        ).json()
        assert_same(body, ref_top(reference, Example(completion=prompt), 5), 5)
        assert body["index_fingerprint"] == reference.index.fingerprint
        exact = {"path": "exact", "normalize": "none", "query_rank": 0, "damping": 0.1}
        assert body["scoring"] == exact
    pair = {"prompt": "the king ", "completion": "loves the sea.", "k": 7, "direction": "both"}
    with ThreadPoolExecutor(8) as pool:  # concurrent: scored in shared batches
        bodies = list(
            pool.map(
                lambda p: client.post("/v1/attributions", json=p).json(),
                [{**pair, "k": 7 - i % 3} for i in range(8)],
            )
        )
    for i, body in enumerate(bodies):
        k = 7 - i % 3
        assert_same(
            body, ref_top(reference, Example(prompt="the king ", completion="loves the sea."), k), k
        )


def test_low_rank_path_returns_exact_scores_and_reports_its_residual(small_index, reference):
    app = create_app(
        ServiceSettings(
            index=str(small_index), device="cpu", scorer="thread", query_rank=1, candidates=3
        )
    )
    with TestClient(app) as c:
        assert c.get("/v1/index").json()["scoring_path"] == "low-rank"
        for prompt in PROMPTS:
            body = c.post(
                "/v1/attributions", json={"prompt": prompt, "k": 5, "direction": "both"}
            ).json()
            assert body["scoring"]["path"] == "low-rank" and body["scoring"]["query_rank"] == 1
            assert 0 < body["scoring"]["residual"] < 1
            exact = reference.score([Example(completion=prompt)], k=5).scores[0]
            for r in body["proponents"] + body["opponents"]:  # exact score of each returned id
                np.testing.assert_allclose(r["score"], exact[r["example_id"]], rtol=1e-5)
            again = c.post(
                "/v1/attributions", json={"prompt": prompt, "k": 5, "direction": "both"}
            ).json()
            assert again["cached"] and again["scoring"] == body["scoring"]


def test_repeat_is_cached_and_examples_and_index(client):
    body = {"prompt": "gold silver horse.", "k": 3}
    first = client.post("/v1/attributions", json=body).json()
    second = client.post("/v1/attributions", json=body).json()
    assert not first["cached"] and second["cached"]
    assert first["proponents"] == second["proponents"] and "opponents" not in first
    ex = client.get(f"/v1/examples/{first['proponents'][0]['example_id']}").json()
    assert ex["text"] == ex["prompt"] + ex["completion"] and ex["n_tokens"] >= 2
    summary = client.get("/v1/index").json()
    assert summary["n_examples"] == 60 and summary["dense_ratio"] > 1
    assert summary["scorer"] == client.app.state.lorif.settings.scorer
    assert summary["device"] == "cpu" and summary["resident"] is False  # auto streams on CPU
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").json()["status"] == "ready"


def test_concurrent_requests_share_scans(client):
    """64 concurrent requests for 32 distinct queries: batches of more than one query form, so
    the 32 queries take fewer than 32 scans (with batching off, max_batch=1, they take 32)."""
    before, batches_before = metric(client, "lorif_scans_total"), batch_sizes(client)
    prompts = [
        f"{w} and the sea, number {i}." for i, w in enumerate(["king", "queen", "moon", "ship"] * 8)
    ]  # 32 distinct
    with ThreadPoolExecutor(64) as pool:
        codes = list(
            pool.map(
                lambda p: client.post("/v1/attributions", json={"prompt": p, "k": 3}).status_code,
                prompts * 2,
            )
        )
    assert codes == [200] * 64
    scans = metric(client, "lorif_scans_total") - before
    (count, total, singles) = (
        a - b for a, b in zip(batch_sizes(client), batches_before, strict=True)
    )
    assert count == scans and total >= 32  # every distinct query was scanned
    assert scans < 32 and singles < count, (scans, count, singles)


def metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} metric")


def batch_sizes(client) -> tuple[float, float, float]:
    """(batches, queries in them, batches of one query) from the lorif_batch_size histogram."""
    return (
        metric(client, "lorif_batch_size_count"),
        metric(client, "lorif_batch_size_sum"),
        metric(client, 'lorif_batch_size_bucket{le="1.0"}'),
    )


@pytest.mark.parametrize(
    "kwargs,status,fragment",
    [
        ({"json": {"prompt": ""}}, 422, "prompt"),
        ({"json": {"prompt": "king " * 200}}, 422, "tokens"),
        ({"json": {"prompt": "x", "k": 0}}, 422, "k"),
        ({"json": {"prompt": "x", "k": 10**6}}, 422, "k"),
        ({"json": {"prompt": 5}}, 422, "prompt"),
        ({"json": {"prompt": "x", "direction": "sideways"}}, 422, "direction"),
        ({"json": {"prompt": "x", "extra": 1}}, 422, "extra"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"content": b"prompt=x", "headers": {"content-type": "text/plain"}}, 415, "json"),
        (
            {
                "content": json.dumps({"prompt": "x" * 8000}).encode(),
                "headers": {"content-type": "application/json"},
            },
            413,
            "bytes",
        ),
    ],
)
def test_bad_inputs_are_problem_json(client, kwargs, status, fragment):
    r = client.post("/v1/attributions", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert (
        body["status"] == status
        and fragment.lower() in (body["detail"] + json.dumps(body.get("errors", ""))).lower()
    )


def test_unknown_example_and_route(client):
    r = client.get("/v1/examples/999999")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = client.get("/v1/examples/abc")
    assert r.status_code == 422
    assert client.get("/v1/nothing").status_code == 404


def test_overload_answers_429_with_retry_after(small_index):
    app = create_app(
        ServiceSettings(
            index=str(small_index),
            device="cpu",
            scorer="thread",
            queue_size=1,
            max_batch=1,
            max_wait_ms=0,
            cache_size=0,
        )
    )
    with TestClient(app) as c, ThreadPoolExecutor(24) as pool:
        responses = list(
            pool.map(
                lambda i: c.post("/v1/attributions", json={"prompt": f"king {i} queen."}), range(24)
            )
        )
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
    busy = next(r for r in responses if r.status_code == 429)
    assert int(busy.headers["retry-after"]) >= 1
    assert busy.headers["content-type"].startswith("application/problem+json")


def test_deadline_gives_504_and_service_recovers(small_index):
    app = create_app(
        ServiceSettings(
            index=str(small_index),
            device="cpu",
            scorer="thread",
            request_timeout_s=0.001,
            cache_size=0,
        )
    )
    with TestClient(app) as c:
        r = c.post("/v1/attributions", json={"prompt": "the king and the sea."})
        assert r.status_code == 504 and r.json()["title"] == "Deadline exceeded"
        app.state.lorif.settings.request_timeout_s = 30.0
        assert (
            c.post("/v1/attributions", json={"prompt": "the king and the sea."}).status_code == 200
        )


def test_lorif_serve_process(small_index):
    """The real entry point: uvicorn in a subprocess, env settings, graceful shutdown."""
    import signal

    import httpx

    from tests.helpers import lorif_serve, server_log

    with lorif_serve(small_index, env={"LORIF_MAX_BATCH": "4"}) as (url, proc):
        r = httpx.post(f"{url}/v1/attributions", json={"prompt": "the king.", "k": 2})
        assert r.status_code == 200 and len(r.json()["proponents"]) == 2
        assert httpx.get(f"{url}/v1/index").json()["scoring_path"] == "exact"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal (exit status -SIGTERM)
    assert code in (0, -signal.SIGTERM)
    log = server_log(proc)
    assert "Application shutdown complete" in log
    assert f"ready: the page at {url}/, the API docs at {url}/docs" in log  # where it listens


def test_explanations_endpoint(client):
    body = client.post(
        "/v1/attributions", json={"prompt": "the king and the queen.", "k": 2}
    ).json()
    top = body["proponents"][0]
    e = client.post(
        "/v1/explanations",
        json={"prompt": "the king and the queen.", "example_id": top["example_id"]},
    )
    assert e.status_code == 200, e.text
    e = e.json()
    assert e["index_score"] == pytest.approx(top["score"], rel=1e-5)
    for side in ("query_tokens", "example_tokens"):
        assert sum(t["contribution"] for t in e[side]) == pytest.approx(e["score"], rel=1e-4)
    assert e["meta"] == top["meta"] and e["compute_ms"] > 0
    bad = client.post("/v1/explanations", json={"prompt": "the king.", "example_id": 10**6})
    assert bad.status_code == 404 and bad.headers["content-type"] == "application/problem+json"
    bad = client.post("/v1/explanations", json={"prompt": "x", "example_id": -1})
    assert bad.status_code == 422


def test_page_is_served_with_a_content_security_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and '<form id="query-form"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from another origin
