"""What a scan keeps of all N scores (histogram, totals by a metadata key), the answer's one
shape (``QueryEngine.answer(...).to_dict()``), the examples around one in its source and the
example queries stored beside an index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from indexer import ConfigError, DataError, ExampleQuery, QueryOptions, write_example_queries
from indexer.data import Example
from indexer.engine.summary import N_BINS, bin_edges, bin_of
from indexer.query import QueryEngine
from indexer.storage.metadata import MetaTable, read_example_queries

QUERY = Example(prompt="", completion="the king is dead and the queen is gone")


@pytest.fixture(scope="module")
def engine(small_index):
    e = QueryEngine.open(str(small_index), device="cpu")
    yield e
    e.close()


def test_bins_hold_their_scores():
    edges = bin_edges()
    assert len(edges) == N_BINS + 1 and edges == sorted(edges)
    s = torch.tensor([-3e5, -2.0, -1e-9, -1e-13, 0.0, 1e-13, 1e-9, 0.5, 2.0, 7e4, 1e20])
    b = bin_of(s)
    odd = bin_of(torch.tensor([float("nan"), float("inf"), -float("inf")]))  # never out of range
    assert ((odd >= 0) & (odd < N_BINS)).all()
    for v, j in zip(s.tolist(), b.tolist(), strict=True):
        lo, hi = edges[j], edges[j + 1]
        inner = lo - 1e-6 * abs(lo) <= v <= hi + 1e-6 * abs(hi)  # float32 at an edge: either
        assert inner or (j in (0, N_BINS - 1) and abs(v) >= 1e12), (v, j, edges[j : j + 2])


def test_histogram_and_totals_cover_all_n_scores(engine):
    res = engine.score([QUERY], keep_scores=True, options=QueryOptions(k=5, totals_by="source"))
    full = res.scores[0].astype(np.float64)
    assert res.histogram is not None and res.histogram[0].sum() == len(engine.index)
    want = np.bincount(bin_of(torch.from_numpy(res.scores[0])).numpy(), minlength=N_BINS)
    assert (res.histogram[0] == want).all()
    t = res.totals
    assert t is not None and t.key == "source" and t.values == ["pair", "text"]
    metas = engine.index.meta_table.metas
    for g, value in enumerate(t.values):
        rows = [i for i, m in enumerate(metas) if m["source"] == value]
        assert t.counts[g] == len(rows)
        assert t.sums[0, g] == pytest.approx(full[rows].sum(), rel=1e-5, abs=1e-6)
    # the scan's top-k is unchanged by the extra reductions
    plain = engine.score([QUERY], keep_scores=False, options=QueryOptions(k=5))
    assert (plain.proponent_ids == res.proponent_ids).all()


def test_totals_of_an_unknown_key_and_a_bad_key_are_refused(engine):
    with pytest.raises(DataError, match="no training example has the metadata key 'nope'"):
        engine.score([QUERY], options=QueryOptions(totals_by="nope"))
    with pytest.raises(ConfigError, match="totals_by"):
        QueryOptions(totals_by="")
    assert QueryOptions(totals_by="a").scoring_key() != QueryOptions(totals_by="b").scoring_key()


def test_the_answer_has_one_shape(engine):
    a = engine.answer(QUERY, QueryOptions(k=3, direction="both", totals_by="source"), True)
    d = json.loads(json.dumps(a.to_dict()))  # plain JSON
    assert set(d) >= {"index_fingerprint", "query_tokens", "scoring", "provenance", "proponents",
                      "opponents", "score_histogram", "totals", "cached", "timings"}  # fmt: skip
    assert len(d["proponents"]) == 3 and d["proponents"][0]["rank"] == 1
    top = d["proponents"][0]
    assert top["text"] == engine.index.example(top["example_id"]).text
    assert set(top) >= {"rank", "example_id", "score", "snippet", "meta", "text"}
    h = d["score_histogram"]
    assert h["n"] == len(engine.index) and len(h["edges"]) == len(h["counts"]) + 1
    assert (
        h["edges"][0] <= d["opponents"][0]["score"] and d["proponents"][0]["score"] < h["edges"][-1]
    )
    p = d["provenance"]
    assert p["index_fingerprint"] == engine.index.fingerprint and p["k"] == 3
    assert p["query"] == {"prompt": QUERY.completion}  # as the API takes it
    assert p["preconditioner"] == engine.index.curvature_kind and p["totals_by"] == "source"
    assert [v["value"] for v in d["totals"]["highest"]] in (["pair", "text"], ["text", "pair"])


def test_context_follows_the_order_key_within_a_scope():
    metas = [
        {"play": "A", "scene": "1", "speech_id": 5},
        {"play": "B", "scene": "1", "speech_id": 1},
        {"play": "A", "scene": "1", "speech_id": 1},
        {"play": "A", "scene": "2", "speech_id": 2},
        {"play": "A", "scene": "1", "speech_id": 3},
        {"other": 1},
    ]
    t = MetaTable(metas)
    assert t.context(4, 1) == [2, 4, 0]  # scene A.1 in speech order, not by id
    assert t.context(3, 2) == [3]
    assert t.context(5, 1) == [4, 5]  # no order key: neighbouring ids


def test_example_queries_beside_an_index(tmp_path):
    index = tmp_path / "idx"
    index.mkdir()
    assert read_example_queries(index) == []
    write_example_queries(index, [ExampleQuery("To be", "", "a line")])
    assert read_example_queries(index) == [ExampleQuery("To be", "", "a line")]
    with pytest.raises(DataError):
        write_example_queries(index, [ExampleQuery("  ")])
