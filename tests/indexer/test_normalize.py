"""Unit normalisation (issue 17): the scan's unit scores are the cosines of query and example
gradients under H^-1, computed here from the stored rows with the dense (V S V^T + lam I)
solved explicitly; top-k follows the unit scores (exact and low-rank paths); the query-time
damping applies to the norms too; the CLI takes --normalize."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer import Example, QueryEngine
from indexer.errors import ConfigError
from tests.helpers import assert_one_error_line, run_cli

QUERIES = [Example(completion="the king loves the sea."), Example(completion="a storm at night.")]


@pytest.fixture(scope="module")
def engine(small_index):
    e = QueryEngine.open(small_index, device="cpu")
    yield e
    e.close()


def dense_norms(engine, scale: float = 1.0) -> np.ndarray:
    """||H^-1/2 g_i|| from the stored rows, H = V diag(sigma2) V^T + lam I built and solved."""
    index = engine.index
    rows = next(iter(index.store().blocks(len(index), "cpu")))[1].double()
    total = np.zeros(len(index))
    for i, (name, c) in enumerate(index.curvature().items()):
        left, right = index.layout.unpack(rows, i)
        g = (left.transpose(1, 2) @ right).reshape(len(index), -1).numpy()
        h = (c.V * c.sigma2) @ c.V.T + c.lam * scale * np.eye(c.V.shape[0])
        total += np.einsum("nd,dn->n", g, np.linalg.solve(h, g.T))
        assert name == index.layout.layers[i].name
    return np.sqrt(total)


@pytest.mark.parametrize("damping", [None, 0.4])
def test_unit_scores_are_cosines_under_the_preconditioner(engine, damping):
    raw = engine.score(QUERIES, k=5, damping=damping).scores
    unit = engine.score(QUERIES, k=5, damping=damping, normalize="unit")
    grads = engine.query_gradients(QUERIES)
    p = engine.preconditioned(QUERIES, damping)
    nq = np.sqrt(sum((grads[n].double() * p[n].double()).sum(dim=(1, 2)).numpy() for n in p))
    ni = dense_norms(engine, 1.0 if damping is None else damping / 0.1)
    want = raw / nq[:, None] / ni[None, :]
    np.testing.assert_allclose(unit.scores, want, rtol=2e-3, atol=1e-4 * np.abs(want).max())
    assert np.abs(unit.scores).max() <= 1.0 + 1e-3  # cosines
    for q in range(len(QUERIES)):
        order = np.argsort(-unit.scores[q], kind="stable")[:5]
        np.testing.assert_allclose(unit.proponent_scores[q], unit.scores[q][order], rtol=1e-6)
    assert not np.array_equal(unit.proponent_ids, engine.score(QUERIES, k=5).proponent_ids)


def test_the_low_rank_path_normalizes_too(engine):
    exact = engine.score(QUERIES, k=5, normalize="unit")
    fast = engine.score(QUERIES, k=5, normalize="unit", query_rank=1, candidates=16)
    np.testing.assert_array_equal(fast.proponent_ids, exact.proponent_ids)
    np.testing.assert_allclose(fast.proponent_scores, exact.proponent_scores, rtol=1e-4)


def test_bad_normalize(engine, small_index, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="none or unit"):
        engine.score(QUERIES, k=5, normalize="l2")
    code, _, err = run_cli(
        monkeypatch, capsys, "query", str(small_index), "the sea", "--normalize", "l2"
    )
    assert_one_error_line(code, err, "--normalize must be none or unit")


def test_cli_normalize(engine, small_index, monkeypatch, capsys):
    code, out, _ = run_cli(
        monkeypatch, capsys, "query", str(small_index), "the king loves the sea.",
        "--normalize", "unit", "--json", "--device", "cpu",
    )  # fmt: skip
    assert code == 0
    got = [r["score"] for r in json.loads(out)["proponents"]]
    want = engine.score(QUERIES[:1], k=10, normalize="unit").proponent_scores[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)
