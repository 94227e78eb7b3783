"""Damping per request and per server (issue 17): a request's `damping` scores as the engine
does at that alpha (alone, and batched beside queries at other alphas), is part of the cache
key, is reported; a server default applies where a request names none; an index built with
an absolute lambda refuses it (422 per request, at start for a server default). Unit
normalisation per request is the engine's too, batched beside plain queries."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer import CurvatureConfig, build_index, query_example
from indexer.errors import ConfigError
from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import small_config

PROMPT = "the king and the queen."


def app_for(index, **settings) -> TestClient:
    return TestClient(
        create_app(ServiceSettings(index=str(index), device="cpu", max_wait_ms=200, **settings))
    )


@pytest.fixture(scope="module", params=["process", "thread"])
def client(small_index, request):
    with app_for(small_index, scorer=request.param) as c:
        yield c


def ref_scores(engine, damping, k=5):
    res = engine.score([query_example(PROMPT, None)], k=k, damping=damping)
    return res.proponent_ids[0][:k], res.proponent_scores[0][:k]


def ask(client, **extra):
    r = client.post("/v1/attributions", json={"prompt": PROMPT, "k": 5, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def check(body, ref) -> None:
    ids, scores = ref
    assert [x["example_id"] for x in body["proponents"]] == list(ids)
    np.testing.assert_allclose([x["score"] for x in body["proponents"]], scores, rtol=1e-5)


def test_a_requests_damping_is_the_engines(client, reference):
    built = ask(client)
    assert built["scoring"]["damping"] == 0.1  # the build's alpha, reported
    check(built, ref_scores(reference, None))
    damped = ask(client, damping=0.4)
    assert damped["scoring"]["damping"] == 0.4 and not damped["cached"]
    check(damped, ref_scores(reference, 0.4))
    assert ask(client, damping=0.4)["cached"]  # its own cache entry
    assert ask(client, damping=0.1)["cached"]  # the build's alpha: the same entry as none
    assert damped["proponents"][0]["score"] != built["proponents"][0]["score"]


def test_queries_at_different_dampings_batched_together(client, reference):
    alphas = [0.05, 0.2, None, 0.7, 0.2, 0.05]
    prompts = [f"{PROMPT} {i}" for i in range(len(alphas))]

    def one(i):
        extra = {} if alphas[i] is None else {"damping": alphas[i]}
        r = client.post("/v1/attributions", json={"prompt": prompts[i], "k": 3, **extra})
        return r.json()

    with ThreadPoolExecutor(len(alphas)) as pool:
        bodies = list(pool.map(one, range(len(alphas))))
    for p, a, body in zip(prompts, alphas, bodies, strict=True):
        res = reference.score([query_example(p, None)], k=3, damping=a)
        got = [x["score"] for x in body["proponents"]]
        np.testing.assert_allclose(got, res.proponent_scores[0][:3], rtol=1e-5)


@pytest.mark.parametrize("bad", ["0", "-1", '"x"', "1e9", "NaN", "Infinity"])
def test_a_bad_damping_is_problem_json(client, bad):
    r = client.post(
        "/v1/attributions",
        content=f'{{"prompt": "x", "damping": {bad}}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_explanations_take_the_damping(client, reference):
    top = ask(client, damping=0.4)["proponents"][0]
    r = client.post(
        "/v1/explanations", json={"prompt": PROMPT, "example_id": top["example_id"], "damping": 0.4}
    )
    assert r.status_code == 200, r.text
    assert np.isclose(r.json()["index_score"], top["score"], rtol=1e-4)


def test_a_server_default(small_index, reference):
    with app_for(small_index, scorer="thread", damping=0.4) as c:
        assert c.get("/v1/index").json()["damping"] == 0.4
        body = ask(c)
        assert body["scoring"]["damping"] == 0.4
        check(body, ref_scores(reference, 0.4))
        check(ask(c, damping=0.1), ref_scores(reference, None))  # a request overrides it


def test_an_absolute_lambda_index_refuses_it(model_dirs, data_jsonl, tmp_path):
    cfg = small_config(model_dirs, data_jsonl, tmp_path / "abs.h5", 0)
    build_index(replace(cfg, curvature=CurvatureConfig(rank=16, damping_abs=0.5)), progress=False)
    with app_for(tmp_path / "abs.h5", scorer="thread") as c:
        r = c.post("/v1/attributions", json={"prompt": PROMPT, "damping": 0.3})
        assert r.status_code == 422 and "absolute lambda" in r.json()["detail"]
        assert r.headers["content-type"] == "application/problem+json"
        assert ask(c)["scoring"].get("damping") is None
    with (
        pytest.raises(ConfigError, match="absolute lambda"),
        app_for(tmp_path / "abs.h5", scorer="thread", damping=0.3),
    ):
        pass


def test_unit_normalisation_per_request(client, reference):
    cases = [("none", None), ("unit", None), ("unit", 0.4), ("none", 0.4), ("unit", None)]
    prompts = [f"{PROMPT} u{i}" for i in range(len(cases))]

    def one(i):
        normalize, damping = cases[i]
        extra = {"normalize": normalize} | ({} if damping is None else {"damping": damping})
        return client.post("/v1/attributions", json={"prompt": prompts[i], "k": 3, **extra}).json()

    with ThreadPoolExecutor(len(cases)) as pool:  # one micro-batch: plain and unit queries
        bodies = list(pool.map(one, range(len(cases))))
    for p, (normalize, damping), body in zip(prompts, cases, bodies, strict=True):
        res = reference.score([query_example(p, None)], k=3, damping=damping, normalize=normalize)
        assert [x["example_id"] for x in body["proponents"]] == list(res.proponent_ids[0][:3])
        got = [x["score"] for x in body["proponents"]]
        np.testing.assert_allclose(got, res.proponent_scores[0][:3], rtol=1e-5)
        assert body["scoring"]["normalize"] == normalize
    unit = ask(client, normalize="unit")
    assert not unit["cached"] and abs(unit["proponents"][0]["score"]) <= 1.0 + 1e-4  # a cosine
    assert ask(client, normalize="unit")["cached"]
