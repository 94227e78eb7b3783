"""The fact-tracing benchmark at CI size: its metrics, BM25, and one small run end to end
(a model trained on planted facts, LoRIF indexes built through the product, the baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fact_tracing import bm25_scores, make_corpus, run, tracing_metrics


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(6, 10)


def test_metrics_score_the_planting_examples(corpus):
    texts, facts, _ = corpus
    assert len(texts) == 6 * 3 + 10 and all(len(f.planted) == 3 for f in facts)
    assert all(f.subject in texts[i] and f.obj in texts[i] for f in facts for i in f.planted)
    perfect = np.zeros((len(facts), len(texts)))
    for q, f in enumerate(facts):
        perfect[q, f.planted] = 1.0
    assert tracing_metrics(perfect, facts) == {"recall@1": 1.0, "recall@10": 1.0, "mrr": 1.0}
    worst = tracing_metrics(-perfect, facts)  # planting examples ranked last
    assert worst["recall@1"] == 0.0 and worst["mrr"] == pytest.approx(1 / (len(texts) - 2))


def test_bm25_finds_invented_names(corpus):
    texts, facts, queries = corpus
    m = tracing_metrics(bm25_scores(texts, [p + c for p, c in queries]), facts)
    assert m["recall@1"] == 1.0 and m["recall@10"] == 1.0


def test_a_small_run_end_to_end():
    out = run(n_facts=8, n_background=24, epochs=10, configs=[(4, 1)])
    methods = {(r["method"], r["config"]) for r in out["rows"]}
    assert ("BM25", "k1=1.5 b=0.75") in methods and ("LoGRA-dense", "f=4") in methods
    assert {("LoRIF " + k, c) for k in ("lowrank", "kfac", "ekfac")
            for c in ("f=4 c=1", "f=4 c=1 unit")} <= methods  # fmt: skip
    for r in out["rows"]:
        assert 0.0 <= r["recall@1"] <= 1.0 and 0.0 < r["mrr"] <= 1.0 and 0.0 <= r["recall@10"] <= 1
    assert out["n_train"] == 48 and 0.0 <= out["completes_planted"] <= 1.0
