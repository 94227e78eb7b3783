"""The fused Triton scan kernel: its cases (``triton_cases.py``) under Triton's CPU interpreter
in a process of their own, and how ``LORIF_KERNEL`` chooses a kernel."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from indexer.engine.packed_scan import scan_kernel, triton_importable
from indexer.errors import ConfigError
from tests.helpers import ROOT


@pytest.mark.skipif(not triton_importable(), reason="triton is not installed (the gpu extra)")
def test_the_fused_kernel_equals_the_torch_path_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "tests.indexer.engine.triton_cases"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert run.stdout.count("ok ") == 9 and "ok c=(1, 3, 2, 1) Q=7 bf16" in run.stdout


def test_lorif_kernel_chooses_once_and_refuses_what_cannot_run(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("LORIF_KERNEL", "auto")
    assert scan_kernel(cpu) == "torch"  # no CUDA, no interpreter
    monkeypatch.setenv("LORIF_KERNEL", "triton")
    with pytest.raises(ConfigError, match="LORIF_KERNEL=triton needs"):
        scan_kernel(cpu)
    monkeypatch.setenv("LORIF_KERNEL", "cuda")
    with pytest.raises(ConfigError, match="must be one of auto, triton, torch"):
        scan_kernel(cpu)


def test_a_kernel_that_fails_under_auto_falls_back_to_torch(monkeypatch, caplog):
    """A Triton kernel that does not run on this card: said once, then the torch path (auto);
    raised when LORIF_KERNEL=triton was asked for."""
    from indexer.engine import packed_scan
    from indexer.engine.kernels import layer_groups
    from tests.indexer.storage.test_streaming import LAYOUT, random_queries

    def broken(*_: object) -> None:
        raise RuntimeError("no kernel image for this card")

    monkeypatch.setattr(packed_scan, "_exact", broken)
    monkeypatch.setattr(packed_scan, "_failed", [])
    groups = layer_groups(LAYOUT, "cpu")
    rows = torch.randn(50, LAYOUT.width)
    packs = packed_scan.pack_block(LAYOUT, groups, rows)
    pg = packed_scan.stacked_queries(groups, random_queries(3))
    want = packed_scan.score_packs(packs, pg, 3, "torch")
    monkeypatch.setenv("LORIF_KERNEL", "triton")
    with pytest.raises(RuntimeError, match="no kernel image"):
        packed_scan.score_packs(packs, pg, 3, "triton")
    monkeypatch.setenv("LORIF_KERNEL", "auto")
    torch.testing.assert_close(packed_scan.score_packs(packs, pg, 3, "triton"), want)
    assert "the Triton scan kernel failed" in caplog.text
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert packed_scan.scan_kernel(torch.device("cpu")) == "torch"  # not tried again
