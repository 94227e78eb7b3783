"""Token explanations: both splits sum to the pair's score; it matches the scan's score."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.data import Example
from indexer.errors import DataError
from indexer.query import QueryEngine


@pytest.fixture(scope="module")
def engine(small_index):
    e = QueryEngine.open(str(small_index), device="cpu")
    yield e
    e.close()


@pytest.mark.parametrize(
    "query",
    [
        Example(completion="the king and the queen."),
        Example(prompt="storm night ", completion="crown fool gold."),
    ],
)
def test_contributions_sum_to_the_score_over_both_texts(engine, query):
    result = engine.score([query], k=3)
    for example_id in [*result.proponent_ids[0], *result.opponent_ids[0]]:
        e = engine.explain(query, int(example_id))
        q_sum = sum(t.contribution for t in e.query_tokens)
        i_sum = sum(t.contribution for t in e.example_tokens)
        assert q_sum == pytest.approx(e.score, rel=1e-4)
        assert i_sum == pytest.approx(e.score, rel=1e-4)
        # the scan's score (bf16 factors) is the same quantity up to storage rounding
        assert e.index_score == pytest.approx(float(result.scores[0, example_id]), rel=1e-5)
        scale = float(np.abs(result.scores[0]).max())
        assert e.score == pytest.approx(e.index_score, rel=2e-2, abs=1e-3 * scale)
        assert len(e.query_tokens) == engine.query_tokens(query)
        assert not e.example_truncated
        ex = engine.index.example(int(example_id))
        assert "".join(t.text for t in e.example_tokens if t.target) == ex.completion


def test_contributions_are_not_uniform(engine):
    """Positions matter: the split is not a constant spread of the score."""
    e = engine.explain(Example(completion="love death and honour."), 0)
    values = np.array([t.contribution for t in e.example_tokens])
    assert values.std() > 1e-3 * abs(values).max()


def test_bad_example_id_and_empty_query(engine):
    with pytest.raises(DataError, match="example_id"):
        engine.explain(Example(completion="the king."), len(engine.index))
    with pytest.raises(DataError):
        engine.explain(Example(prompt="the king.", completion=""), 0)
