"""bench_scale.py runs end to end at small sizes (real torchrun processes for the 2-process
build, a tiled sharded index for the scan) and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT


def test_bench_scale_runs_and_reports_every_figure(small_index, data_jsonl, model_dirs, tmp_path):
    out = tmp_path / "scale.json"
    cmd = [
        sys.executable, "-m", "benchmarks.bench_scale", "--build-rows", "40", "--shards", "3",
        "--shard-rows", "500", "--batch", "4", "--index", str(small_index), "--corpus",
        str(data_jsonl), "--model", str(model_dirs["llama"]), "--json", str(out),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["build"]["rows"] == 40 and figures["build"]["speedup"] > 0
    scan = figures["scan"]
    assert scan["rows"] == 1500 and scan["queries_1"]["gb_per_s"] > 0
    assert scan["queries_4"]["seconds"] > 0
    cost = figures["llama3_8b_1b_tokens"]
    assert cost["bytes_per_example"] == 32 * 5120 * 2  # f = 16, c = 1, bf16
    assert cost["h100s_to_hold_resident"] >= 1
