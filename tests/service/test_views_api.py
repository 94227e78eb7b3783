"""The answer's one shape (HTTP API, `lorif query --json`, `QueryEngine.answer().to_dict()`),
the views over all N scores (histogram, totals by a metadata key), POST /v1/compare and
GET /v1/examples/{id}/context, on the small index with a real server app."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer import QueryOptions
from indexer.data import query_example
from service.app import create_app
from service.settings import ServiceSettings
from tests.helpers import run_cli

from .conftest import lorif

PROMPT = "the king and the queen."
VOLATILE = {"time", "index_version", "total_ms", "queue_ms", "featurize_ms", "scan_ms"}


@pytest.fixture(scope="module")
def client(small_index):
    app = create_app(ServiceSettings(index=str(small_index), device="cpu", scorer="thread"))
    with TestClient(app) as c:
        yield c


def shape(value, path=""):
    """Every key path of a JSON value (lists: their first element's), with the values that do
    not vary between runs."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k not in VOLATILE:
                out.update(shape(v, f"{path}.{k}"))
        return out
    if isinstance(value, list):
        return {f"{path}[]": len(value), **(shape(value[0], f"{path}[0]") if value else {})}
    return {path: round(value, 4) if isinstance(value, float) else value}


def test_api_cli_and_python_answer_alike(client, reference, small_index, monkeypatch, capsys):
    body = {"prompt": PROMPT, "k": 3, "direction": "both", "totals_by": "source"}
    api = client.post("/v1/attributions", json={**body, "full_text": True}).json()
    code, out, err = run_cli(
        monkeypatch, capsys, "query", str(small_index), PROMPT, "-k", "3", "--json",
        "--full-text", "--totals-by", "source",
    )  # fmt: skip
    assert code == 0, err
    cli = json.loads(out)
    options = QueryOptions(k=3, direction="both", totals_by="source")
    py = reference.answer(query_example(PROMPT), options, full_text=True).to_dict()
    assert api["provenance"]["index_version"] == 1 and "index_version" not in cli["provenance"]
    want = shape({k: v for k, v in api.items() if k != "cached"})
    for other in (cli, py):
        got = shape({k: v for k, v in other.items() if k != "cached"})
        assert got.keys() == want.keys(), got.keys() ^ want.keys()
        for key, value in want.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            assert got[key] == (pytest.approx(value, rel=1e-4) if number else value), key
    assert api["proponents"][0]["text"] == reference.index.example(
        api["proponents"][0]["example_id"]).text  # fmt: skip


def test_histogram_and_totals_are_cached_with_the_answer(client, reference):
    body = {"prompt": "storm night crown fool gold.", "k": 4, "totals_by": "source"}
    first = client.post("/v1/attributions", json=body).json()
    again = client.post("/v1/attributions", json=body).json()
    assert again["cached"] and not first["cached"]
    assert again["score_histogram"] == first["score_histogram"]
    assert again["totals"] == first["totals"]
    res = reference.score([query_example(body["prompt"])], keep_scores=True)
    assert first["score_histogram"]["n"] == res.scores.shape[1]
    metas = reference.index.meta_table.metas
    for e in first["totals"]["highest"]:
        rows = [i for i, m in enumerate(metas) if m["source"] == e["value"]]
        assert e["rows"] == len(rows)
        np.testing.assert_allclose(e["sum"], res.scores[0, rows].sum(), rtol=1e-4, atol=1e-6)
    bad = client.post("/v1/attributions", json={**body, "totals_by": "nope"})
    assert bad.status_code == 422 and "nope" in bad.json()["detail"]


def test_compare_two_queries(client):
    other = "love death and honour."
    c = client.post("/v1/compare", json={"a": {"prompt": PROMPT}, "b": {"prompt": other},
                                         "k": 5}).json()  # fmt: skip
    lists = [
        client.post("/v1/attributions", json={"prompt": p, "k": 100}).json()["proponents"]
        for p in (PROMPT, other)
    ]
    ranks = [{r["example_id"]: (r["rank"], r["score"]) for r in rows} for rows in lists]
    top = [{r["example_id"] for r in rows[:5]} for rows in lists]
    assert {r["example_id"] for r in c["shared"]} == top[0] & top[1]
    assert [r["example_id"] for r in c["only_a"]] == [
        r["example_id"] for r in lists[0][:5] if r["example_id"] not in top[1]]  # fmt: skip
    assert [r["example_id"] for r in c["only_b"]] == [
        r["example_id"] for r in lists[1][:5] if r["example_id"] not in top[0]]  # fmt: skip
    for r in c["shared"] + c["only_a"] + c["only_b"]:
        for side, rank in (("a", ranks[0]), ("b", ranks[1])):
            want = rank.get(r["example_id"])
            got = (r.get(f"rank_{side}"), r.get(f"score_{side}"))  # absent: beyond the depth
            assert got == (None, None) if want is None else got == pytest.approx(want, rel=1e-5)
    assert c["overlap"] == len(c["shared"]) / 5 and c["depth"] == 100
    assert c["provenance_b"]["query"] == {"prompt": other}
    for bad in ({"a": {"prompt": PROMPT}}, {"a": {"prompt": PROMPT}, "b": {"prompt": ""}},
                {"a": {"prompt": PROMPT}, "b": {"prompt": other}, "k": 0}):  # fmt: skip
        r = client.post("/v1/compare", json=bad)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_context_without_an_order_key_is_by_id(client):
    ctx = client.get("/v1/examples/5/context?n=2").json()
    assert ctx["by"] == "example id"
    assert [e["example_id"] for e in ctx["examples"]] == [3, 4, 5, 6, 7]
    assert client.get("/v1/examples/0/context?n=1").json()["examples"][0]["example_id"] == 0
    assert client.get("/v1/examples/10000/context").status_code == 404
    assert client.get("/v1/examples/1/context?n=99").status_code == 422


def test_cli_prints_verbatim_and_totals(small_index, tmp_path, monkeypatch, capsys):
    index = shutil.copy(small_index, tmp_path / "v.h5")
    lorif("index", "verbatim", str(index))
    code, out, err = run_cli(monkeypatch, capsys, "query", str(index), PROMPT, "-k", "2")
    assert code == 0, err
    assert "\nverbatim (the query's words, word for word" in out
    code, out, err = run_cli(
        monkeypatch, capsys, "query", str(index), PROMPT, "-k", "2", "--totals-by", "source"
    )
    assert code == 0 and "\ntotals by source (all 60 examples, 2 values):" in out, err
    code, out, err = run_cli(monkeypatch, capsys, "query", str(index), PROMPT, "--totals-by", "")
    assert code == 2 and "--totals-by must be a metadata key" in err


def test_example_queries_and_the_curvature_rank_warning(
    model_dirs, data_jsonl, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "few.h5"
    code, _, err = run_cli(
        monkeypatch, capsys, "index", "build", "--model", str(model_dirs["llama"]), "--data",
        str(data_jsonl), "--output", str(out), "--rank", "2", "--proj-factor", "4",
        "--curvature-rank", "16", "--limit", "20",
    )  # fmt: skip
    assert code == 0, err
    assert "--curvature-rank 16 (+ 10 oversampling) is more than the 20 examples" in err
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"text": "the king", "note": "a king"}) + "\n")
    code, stdout, err = run_cli(monkeypatch, capsys, "index", "example-queries", str(out),
                                str(queries))  # fmt: skip
    assert code == 0 and "(1)" in stdout, err
    code, stdout, _ = run_cli(monkeypatch, capsys, "index", "info", str(out), "--json")
    assert json.loads(stdout)["example_queries"][0]["note"] == "a king"
