"""bench_gpu.py runs end to end (on CPU, small sizes): GPU time is scarce, so the script a GPU
machine runs must not be the first thing to find its bugs."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT


def test_bench_gpu_runs_on_cpu_and_reports_every_figure(tmp_path):
    out = tmp_path / "gpu.json"
    # bf16 runs ~100x slower on a CPU: the autocast comparison gets 2 examples and 2 queries
    cmd = [
        *(sys.executable, "-m", "benchmarks.bench_gpu", "--rows", "2000", "--examples", "16"),
        *("--autocast-examples", "2", "--device-rows", "2000", "--serve-examples", "32"),
    ]
    res = subprocess.run(
        [*cmd, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["rows"] == 2000 and figures["device"] == "CPU"
    for mode in ("streamed", "resident", "generated"):  # generated: rows made on the device
        for q in (1, 8, 32, 64):
            assert figures["scan_s"][f"{mode}_torch_{q}"] > 0  # triton: only where it compiles
    assert figures["bandwidth_gb_s"]["page_cache_read_1_thread"] > 0
    assert 0 < figures["indexing_none"]["ratio_build_over_plain"] < 100
    effect = figures["autocast_effect"]
    assert 0 <= effect["factor_rel_error_median"] <= effect["factor_rel_error_max"] < 1
    assert -1 <= effect["score_spearman_min"] <= 1 and 0 <= effect["top10_overlap_mean"] <= 1
    assert "resident_torch: batched / 1 query = 8: " in res.stdout
    serve = figures["serve"]  # `lorif serve` on a 32-row index built here
    assert serve["rows"] == 32 and 0 < serve["cached_p50_ms"] < serve["uncached_single_p50_ms"]
    assert 0 < serve["concurrent_32_wall_s"] < 120
