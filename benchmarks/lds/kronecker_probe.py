"""Probe for the Kronecker-factored preconditioner on LDS setting B (before it is in the build).

What it measures, on setting B's model, data and committed ground truth: the projected
K-FAC / EK-FAC preconditioner (indexer/engine/kronecker.py) with the token-level moments the
featurizer sums (``Featurizer.gradients(moments=...)``), the EK-FAC eigenvalues refit from the
rank-c factor rows LoRIF stores (bf16, the build's ``factorize``), scored by the service's own
scan (``score_store``); beside them the same preconditioner on the unfactorized projected
gradients (what any storage-free method sees). One row per f, c, preconditioner, damping α.

    python -m benchmarks.lds.kronecker_probe [--json out.json]   # ~1-2 min
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from indexer.data import Example
from indexer.engine.factorize import factorize
from indexer.engine.kronecker import (
    KroneckerMoments,
    KroneckerPreconditioner,
    LayerKronecker,
    ekfac_eigenvalues,
    kfac,
)
from indexer.engine.layout import FactorLayout
from indexer.engine.scoring import score_store
from indexer.models.featurizer import Featurizer
from indexer.storage.store import MemoryFactorStore

from .harness import Report, read_ground_truth
from .shakespeare import GROUND_TRUTH, trained_setting

ALPHAS = (0.1, 0.01)


def featurize(feat: Featurizer, examples: list[Example], moments: KroneckerMoments | None):
    parts: dict[str, list[torch.Tensor]] = {}
    for s in range(0, len(examples), 32):
        for name, g in feat.gradients(examples[s : s + 32], moments=moments).items():
            parts.setdefault(name, []).append(g)
    return {n: torch.cat(v) for n, v in parts.items()}


def scores_dense(bases: dict[str, LayerKronecker], g_train, g_query, alpha: float, refit: bool):
    """The preconditioner on unfactorized gradients: sum_layers <P_q, G~_i> (Q, N)."""
    total = None
    for name, base in bases.items():
        layer = _refit(base, g_train[name]) if refit else base
        pre = KroneckerPreconditioner.from_layer(layer, alpha)
        s = torch.einsum("qij,nij->qn", pre.apply(g_query[name].double()), g_train[name].double())
        total = s if total is None else total + s
    assert total is not None
    return total.numpy()


def _refit(base: LayerKronecker, g: torch.Tensor) -> LayerKronecker:
    """EK-FAC's eigenvalues from the unfactorized gradients g (N, d1, d2), in ``base``'s
    eigenbasis (what the build's refit sees only through the rank-c rows)."""
    qa, qs = torch.as_tensor(base.QA).double(), torch.as_tensor(base.QS).double()
    eig = ((qa.T @ g.double() @ qs) ** 2).sum(0).numpy()
    return LayerKronecker(base.QA, base.QS, eig)


def scores_stored(store: MemoryFactorStore, bases: dict[str, LayerKronecker], g_query, alpha):
    pre = {n: KroneckerPreconditioner.from_layer(b, alpha) for n, b in bases.items()}
    p = {n: pre[n].apply(g.float()) for n, g in g_query.items()}
    result = score_store(store, p, k=1, keep_scores=True)
    assert result.scores is not None
    return result.scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    subsets, losses, _ = read_ground_truth(GROUND_TRUTH)
    model, task, train_ex, query_ex = trained_setting()
    report = Report(subsets, losses)
    for f in (1, 4):
        feat = Featurizer.create(model, task, proj_factor=f, seed=0)
        moments = KroneckerMoments()
        g_train = featurize(feat, train_ex, moments)
        g_query = featurize(feat, query_ex, None)
        kfac_bases = {n: kfac(moments.A[n], moments.S[n]) for n in g_train}
        dense_bytes = 2 * sum(g[0].numel() for g in g_train.values())
        for alpha in ALPHAS:
            for refit, label in ((False, "K-FAC"), (True, "EK-FAC")):
                s = scores_dense(kfac_bases, g_train, g_query, alpha, refit)
                report.add(f"{label}, unfactorized", f"f={f} α={alpha}", s, dense_bytes, 0.0)
        full_eig = {n: _refit(b, g_train[n]) for n, b in kfac_bases.items()}
        for c in (1, 2, 4):
            layout = FactorLayout.uniform(tuple(feat.layers), c)
            rows = layout.pack({n: factorize(g, c) for n, g in g_train.items()})
            store = MemoryFactorStore.from_float(layout, rows, "bf16")
            ekfac_bases = ekfac_eigenvalues(store, kfac_bases)
            nbytes = store.raw.shape[1] * store.raw.dtype.itemsize
            for alpha in ALPHAS:
                for bases, label in (
                    (kfac_bases, "K-FAC"),
                    (ekfac_bases, "EK-FAC"),
                    (full_eig, "EK-FAC, eigenvalues of unfactorized G"),
                ):
                    s = scores_stored(store, bases, g_query, alpha)
                    report.add(f"LoRIF {label}", f"f={f} c={c} α={alpha}", s, nbytes, 0.0)
    if args.json:
        args.json.write_text(json.dumps(report.rows, indent=2))
    print(f"{len(query_ex)} queries; LDS over {len(subsets)} subsets", flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
