"""CPU == CUDA: the reader, exact and low-rank scores (streamed, resident, grouped layers), the
curvature, featurized factors, and a full build + query + ``lorif serve`` request on CUDA.

Marked ``gpu`` and skipped without CUDA. ``LORIF_TEST_DEVICE=cpu`` runs the same comparisons
with CPU on both sides (checks the tests themselves on a machine without a GPU).
"""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
import torch

from indexer import BuildConfig, CurvatureConfig, Example, QueryEngine, build_index
from indexer.engine.kernels import LowRankQueries, score_rows, score_rows_lowrank
from indexer.engine.lowrank import compute_curvature
from indexer.engine.packed_scan import triton_importable
from indexer.engine.scoring import score_store
from indexer.models.featurizer import Featurizer
from indexer.models.tasks import CausalLMTask
from indexer.storage.codec import decode_rows
from indexer.storage.resident import ResidentFactorStore
from indexer.storage.streaming import BlockReader
from tests.helpers import lorif_serve, make_model
from tests.indexer.storage.test_streaming import LAYOUT, random_queries, random_store

DEVICE = os.environ.get("LORIF_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs CUDA"
    ),
]
QUERIES = [Example(completion="the king and the queen."), Example(completion="storm night.")]


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("readers", [1, 4])
def test_reader_cpu_equals_device(dtype, readers):
    store = random_store(5000, dtype)
    cpu = torch.cat([r.clone() for _, r in BlockReader(store, 777)])
    dev = torch.cat([r.clone() for _, r in BlockReader(store, 777, DEVICE, readers=readers)])
    assert torch.equal(dev.cpu(), cpu)
    assert torch.equal(cpu, decode_rows(store.read(0, 5000), dtype))


@pytest.mark.parametrize("query_rank", [0, 1])
@pytest.mark.parametrize("resident", [False, True])
def test_scores_cpu_equal_device_streamed_and_resident(query_rank, resident, monkeypatch):
    monkeypatch.setenv("LORIF_KERNEL", "torch")  # the fused kernel: the next test
    store, p = random_store(20000, "bf16"), random_queries(32)
    ref = score_store(store, p, k=10, query_rank=query_rank)
    on_device = ResidentFactorStore(store, DEVICE) if resident else store
    got = score_store(
        on_device, {n: t.to(DEVICE) for n, t in p.items()}, 10, device=DEVICE, query_rank=query_rank
    )
    np.testing.assert_array_equal(got.proponent_ids, ref.proponent_ids)
    np.testing.assert_array_equal(got.opponent_ids, ref.opponent_ids)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-3)
    # every score counted once on both (a score on a bin edge may land either side of it)
    assert got.histogram.sum(axis=1).tolist() == [20000] * 32
    assert np.abs(got.histogram - ref.histogram).sum() <= 0.001 * got.histogram.sum()


@pytest.mark.skipif(not triton_importable(), reason="triton is not installed (the gpu extra)")
@pytest.mark.parametrize("nq", [1, 7, 32, 64])
@pytest.mark.parametrize("resident", [False, True])
def test_fused_triton_kernel_on_device_equals_cpu(nq, resident, monkeypatch):
    """The compiled kernel (tensor cores: tf32 products, fp32 sums) against the CPU path."""
    if not DEVICE.startswith("cuda"):
        pytest.skip("the compiled kernel needs CUDA")
    store, p = random_store(20011, "bf16"), random_queries(nq)  # N not a multiple of a tile
    ref = score_store(store, p, k=10)
    monkeypatch.setenv("LORIF_KERNEL", "triton")
    on_device = ResidentFactorStore(store, DEVICE) if resident else store
    got = score_store(on_device, {n: t.to(DEVICE) for n, t in p.items()}, 10, device=DEVICE)
    np.testing.assert_array_equal(got.proponent_ids, ref.proponent_ids)
    np.testing.assert_array_equal(got.opponent_ids, ref.opponent_ids)
    scale = float(np.abs(ref.scores).max())
    np.testing.assert_allclose(got.scores, ref.scores, rtol=0, atol=2e-3 * scale)


def test_grouped_kernel_on_device_equals_per_layer_on_cpu():
    rows = decode_rows(random_store(3000, "fp32").read(0, 3000), "fp32")
    p = random_queries(8)
    pd = {n: t.to(DEVICE) for n, t in p.items()}
    close(score_rows(LAYOUT, rows.to(DEVICE), pd, grouped=True), score_rows(LAYOUT, rows, p))
    lr, lrd = LowRankQueries.factor(p, 2), LowRankQueries.factor(pd, 2)
    close(
        score_rows_lowrank(LAYOUT, rows.to(DEVICE), lrd, grouped=True),
        score_rows_lowrank(LAYOUT, rows, lr),
    )


def test_curvature_cpu_equals_device():
    store = random_store(4000, "fp32")
    cfg = CurvatureConfig(rank=8)
    ref, got = compute_curvature(store, cfg), compute_curvature(store, cfg, DEVICE)
    for name in ref:
        np.testing.assert_allclose(got[name].sigma2, ref[name].sigma2, rtol=1e-4)
        np.testing.assert_allclose(got[name].lam, ref[name].lam, rtol=1e-4)


def test_featurized_factors_cpu_equal_device(tokenizer, corpus):
    model = make_model("llama", tokenizer)
    examples = [Example(completion=t) for t in corpus[:8]]
    grads = {}
    for device in ("cpu", DEVICE):
        feat = Featurizer.create(
            model.to(device), CausalLMTask(tokenizer), proj_factor=2, device=device
        )
        grads[device] = feat.gradients(examples)
    for name, g in grads["cpu"].items():
        close(grads[DEVICE][name], g, rtol=1e-3)


def test_build_query_and_serve_on_device(model_dirs, data_jsonl, tmp_path):
    out = tmp_path / "gpu.h5"
    common = {"model": str(model_dirs["llama"]), "data": str(data_jsonl), "proj_factor": 4}
    build_index(BuildConfig(**common, rank=2, output=str(out), device=DEVICE), progress=False)
    build_index(
        BuildConfig(**common, rank=2, output=str(tmp_path / "cpu.h5"), device="cpu"), progress=False
    )
    results = {}
    for name, device in (("cpu.h5", "cpu"), ("gpu.h5", DEVICE)):
        engine = QueryEngine.open(str(tmp_path / name), device=device)
        results[name] = engine.score(QUERIES, k=5)
        engine.close()
    np.testing.assert_allclose(
        results["gpu.h5"].scores, results["cpu.h5"].scores, rtol=1e-2, atol=1e-3
    )
    with lorif_serve(out, env={"LORIF_DEVICE": DEVICE}) as (url, _):
        r = httpx.post(f"{url}/v1/attributions", json={"prompt": "the king.", "k": 3}, timeout=60)
        assert r.status_code == 200 and len(r.json()["proponents"]) == 3
