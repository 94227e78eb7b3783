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
    assert run.stdout.count("ok ") == 10 and "ok c=4 Q=64 bf16" in run.stdout


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
