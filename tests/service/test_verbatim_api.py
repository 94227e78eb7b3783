"""Verbatim evidence in /v1/attributions (issue 18): the panel lists the example a query quotes
first, ranked results it contains are marked, a cached answer carries the same evidence,
`verbatim: false` leaves it out, and an index without a table answers without it."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from indexer import Index
from service.app import create_app
from service.settings import ServiceSettings


def client_for(index) -> TestClient:
    return TestClient(create_app(ServiceSettings(index=str(index), device="cpu", scorer="thread")))


@pytest.fixture(scope="module")
def client(small_sharded_index):
    with client_for(small_sharded_index) as c:
        yield c


@pytest.fixture(scope="module")
def quoted(small_sharded_index) -> tuple[int, str]:
    with Index(small_sharded_index) as index:
        for i in range(len(index)):
            text = index.example(i).prompt + index.example(i).completion
            if len(text.split()) >= 12:
                return i, " ".join(text.split()[1:9])
    raise AssertionError("no long example")


def test_the_quoted_example_comes_first_and_is_marked(client, quoted):
    i, quote = quoted
    body = client.post("/v1/attributions", json={"prompt": quote, "k": 60}).json()
    first = body["verbatim"][0]
    assert first["example_id"] == i and first["words"] == 8
    assert first["text"].split() == quote.split() and first["text"] in first["snippet"]
    marked = {r["example_id"]: r.get("verbatim_words") for r in body["proponents"]}
    assert marked[i] == 8  # k = 60: every example is ranked, the quoted one carries its mark
    panel = {m["example_id"]: m["words"] for m in body["verbatim"]}
    assert all(marked.get(e) == w for e, w in panel.items())
    again = client.post("/v1/attributions", json={"prompt": quote, "k": 60}).json()
    assert again["cached"] and again["verbatim"] == body["verbatim"]
    off = client.post("/v1/attributions", json={"prompt": quote, "k": 5, "verbatim": False})
    assert "verbatim" not in off.json()
    assert all("verbatim_words" not in r for r in off.json()["proponents"])


def test_an_index_without_a_table_answers_without_evidence(small_index, tmp_path, quoted):
    copy = tmp_path / "copy.h5"
    shutil.copy(small_index, copy)  # not its .verbatim.sqlite
    with client_for(copy) as c:
        r = c.post("/v1/attributions", json={"prompt": quoted[1], "k": 3})
        assert r.status_code == 200 and "verbatim" not in r.json()
