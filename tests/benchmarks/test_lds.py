"""The LDS harness: Spearman with ties, perfect and reversed predictors, and the CI smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.lds.harness import lds, random_subsets, spearman
from tests.helpers import ROOT


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 6, 40).astype(float), rng.normal(size=40)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_lds_of_exact_and_reversed_linear_datamodels():
    rng = np.random.default_rng(1)
    subsets = random_subsets(60, 200, seed=2)
    assert (subsets.sum(axis=1) == 100).all()
    tau = rng.normal(size=(5, 200))  # the true per-example effects on 5 queries
    losses = -(subsets @ tau.T)  # helping examples lower the loss
    good = lds(tau, subsets, losses)
    assert good.mean == pytest.approx(1.0) and good.ci_low == pytest.approx(1.0)
    assert lds(-tau, subsets, losses).mean == pytest.approx(-1.0)
    noisy = lds(tau + rng.normal(scale=3.0, size=tau.shape), subsets, losses)
    assert -1 < noisy.ci_low <= noisy.mean <= noisy.ci_high < 1


def test_logra_dense_kernel_form_equals_parameter_form():
    """N < D takes the N x N kernel (Woodbury) path; it must give the D x D solve's scores."""
    import torch

    from benchmarks.lds import harness

    gen = torch.Generator().manual_seed(0)
    train = {"a": torch.randn(30, 6, 8, generator=gen), "b": torch.randn(30, 3, 3, generator=gen)}
    query = {"a": torch.randn(4, 6, 8, generator=gen), "b": torch.randn(4, 3, 3, generator=gen)}
    kernel = harness.logra_dense_scores(train, query)  # "a": D = 48 > N = 30
    wide = {n: torch.cat([g, torch.zeros(60, *g.shape[1:])]) for n, g in train.items()}
    param = harness.logra_dense_scores(wide, query)[:, :30]  # N = 90 >= D: the D x D solve
    np.testing.assert_allclose(kernel, param, rtol=1e-9, atol=1e-12)
    assert np.abs(kernel).max() > 1e-3


def test_seed_agreement_of_identical_and_independent_seeds(tmp_path):
    from benchmarks.lds.harness import save_ground_truth, seed_agreement

    rng = np.random.default_rng(3)
    subsets = random_subsets(20, 50, seed=4)
    base = rng.normal(size=(20, 1, 6)).astype(np.float32)
    save_ground_truth(tmp_path / "same.npz", subsets, np.repeat(base, 4, axis=1), {})
    assert seed_agreement(tmp_path / "same.npz") == pytest.approx(1.0)
    noise = rng.normal(size=(20, 4, 6)).astype(np.float32)
    save_ground_truth(tmp_path / "noise.npz", subsets, noise, {})
    assert abs(seed_agreement(tmp_path / "noise.npz")) < 0.3


def test_digits_smoke_run(tmp_path):
    """The CI smoke version of setting A: a tiny ground truth, LoRIF and LoGRA-dense, gradient
    dot; every method yields a finite LDS with a CI."""
    out = tmp_path / "smoke.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.lds.digits", "evaluate", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert {r["method"] for r in rows} == {"LoRIF", "LoGRA-dense", "grad-dot"}
    for r in rows:
        assert np.isfinite(r["lds"]) and r["ci"][0] <= r["lds"] <= r["ci"][1]
    lorif = [r for r in rows if r["method"] == "LoRIF"][0]
    dense = [r for r in rows if r["method"] == "LoGRA-dense"][0]
    assert dense["bytes_per_example"] >= 8 * lorif["bytes_per_example"]


def test_committed_ground_truth_reproduces_where_lds_looks():
    """The committed digits ground truth: its shape; on this machine a retrain is bit-for-bit
    deterministic; and on any machine (CPU families round differently: one retrain on AMD
    differed from the committed Intel losses by up to 23 %) retraining 8 subsets ranks them, per
    query, as the committed losses do, at least as well as two committed seeds agree: the
    per-query rank correlation over subsets is what LDS is made of."""
    import torch

    from benchmarks.lds import digits
    from benchmarks.lds.harness import spearman

    subsets, mean_losses, config = digits.read_ground_truth(digits.GROUND_TRUTH)
    assert subsets.shape == (100, digits.N_TRAIN) and (subsets.sum(1) == digits.N_TRAIN // 2).all()
    assert mean_losses.shape == (100, digits.N_QUERY) and config["seeds"] == 3
    raw = np.load(digits.GROUND_TRUTH)["losses"]  # (M, seeds, Q)
    x, y, xq, yq = digits.load()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def retrain(m: int) -> np.ndarray:
        idx = torch.from_numpy(np.flatnonzero(subsets[m]))
        return digits.query_losses(digits.train(x[idx], y[idx], seed=2), xq, yq)

    try:
        again = np.stack([retrain(m) for m in range(8)])  # (8, Q)
        assert np.array_equal(retrain(7), again[7])  # same machine: exactly the same
    finally:
        torch.set_num_threads(threads)
    per_query = lambda a, b: np.mean([spearman(a[:, q], b[:, q]) for q in range(a.shape[1])])  # noqa: E731
    agree = per_query(again, raw[:8, 2])
    seeds = per_query(raw[:8, 1], raw[:8, 2])
    assert agree >= seeds - 0.05 and agree > 0.5, (agree, seeds)


def test_milton_passages_are_whole_lines_between_breaks():
    """Setting C's cut: lines joined until a blank line or 200 characters; headings dropped."""
    from benchmarks.lds.milton import passages

    verse = "\n".join(f"Line {i} of the verse, with words enough to count" for i in range(9))
    text = f"BOOK I.\n\n{verse}\n\nA short paragraph.\n\n\nAnother one\nin two lines."
    line = len("Line 0 of the verse, with words enough to count")  # 47
    out = passages(text)
    # five lines reach 200 characters (4 x 48 = 192 do not); the other four end at the break
    assert out[0] == " ".join(verse.splitlines()[:5]) and len(out[0]) == 5 * line + 4
    assert out[1] == " ".join(verse.splitlines()[5:])
    assert out[2:] == ["A short paragraph.", "Another one in two lines."]
    assert all("BOOK" not in p for p in out)


def test_setting_c_ground_truth_is_committed():
    """Setting C's ground truth: 60 halves of 1,000 passages x 8 seeds x 50 queries, and its
    seeds agree with each other (4 vs 4) better than chance: there is signal to rank by."""
    from benchmarks.lds import milton
    from benchmarks.lds.harness import read_ground_truth, seed_agreement

    subsets, mean_losses, config = read_ground_truth(milton.GROUND_TRUTH)
    assert subsets.shape == (60, milton.N_TRAIN) and (subsets.sum(1) == milton.N_TRAIN // 2).all()
    assert mean_losses.shape == (60, milton.N_QUERY) and np.isfinite(mean_losses).all()
    assert config["seeds"] == 8 and config["setting"] == "milton-gpt2-tiny"
    assert seed_agreement(milton.GROUND_TRUTH) > 0.1
