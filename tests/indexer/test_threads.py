"""CPU threads sized from what the process may use: affinity, cgroup quota, other work's load."""

from __future__ import annotations

import os

import pytest
import torch

from indexer import threads
from indexer.errors import ConfigError


def test_cgroup_v2_and_v1_quotas_cap_the_affinity_mask(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert threads.available_cpus(v2) == min(affinity, 2)
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.available_cpus(v2) == affinity
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")  # half a CPU: still one thread
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.available_cpus(tmp_path / "v1") == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.available_cpus(tmp_path / "v1") == affinity
    assert threads.available_cpus(tmp_path / "none") == affinity


def test_the_environment_wins(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    assert threads.auto_threads() == 8
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.auto_threads() == 3
    monkeypatch.setenv(threads.ENV, "0")  # the service documents 0 as "the CPUs available"
    assert threads.auto_threads() == 8
    for bad in ("many", "-1"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(ConfigError, match="LORIF_THREADS"):
            threads.auto_threads()


def test_use_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert threads.use_threads(1) == 1 and torch.get_num_threads() == 1
        n = threads.use_threads(0)
        assert n >= 1 and torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
