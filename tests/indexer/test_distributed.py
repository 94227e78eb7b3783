"""A build on 2 processes (torchrun, gloo) answers as a 1-process build, and a rank killed with
SIGKILL mid-build is finished by rerunning the same command. Real torchrun processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from indexer import Example, Index, QueryEngine, build_index
from indexer.config import BuildConfig, CurvatureConfig
from tests.helpers import ROOT, make_corpus, write_jsonl

from .storage.test_resume import rows_done

QUERIES = [
    Example(prompt="the king ", completion="loves the sea and the moon."),
    Example(completion="storm night crown fool gold."),
]
SETTINGS = {"proj-factor": 4, "rank": 2, "curvature-rank": 8, "batch-size": 4, "seed": 5}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rows = [{"text": t, "i": i} for i, t in enumerate(make_corpus(200, seed=3))]
    return write_jsonl(tmp_path_factory.mktemp("dist") / "data.jsonl", rows)


@pytest.fixture(scope="module")
def one_process(model_dirs, data, tmp_path_factory) -> Path:
    cfg = BuildConfig(
        model=str(model_dirs["llama"]),
        data=str(data),
        output=str(tmp_path_factory.mktemp("one") / "index"),
        proj_factor=4,
        rank=2,
        curvature=CurvatureConfig(rank=8),
        batch_size=4,
        seed=5,
        shard_size=32,
    )
    return build_index(cfg, progress=False)


def command(model_dir: Path, data: Path, out: Path, launcher: list[str]) -> list[str]:
    flags = {"model": model_dir, "data": data, "output": out, "shard-size": 32, **SETTINGS}
    return [*launcher, "index", "build", *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "LORIF_THREADS": "1"}


def answers(path: Path):
    engine = QueryEngine.open(path, device="cpu")
    try:
        return engine.score(QUERIES, k=10, keep_scores=True)
    finally:
        engine.close()


def assert_same_answers(path: Path, reference: Path) -> None:
    got, want = answers(path), answers(reference)
    assert (got.proponent_ids == want.proponent_ids).all()
    assert (got.opponent_ids == want.opponent_ids).all()
    scale = np.abs(want.scores).max()
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-3, atol=1e-4 * scale)


def test_two_processes_answer_as_one(model_dirs, data, one_process, tmp_path):
    out = tmp_path / "two"
    launcher = [*TORCHRUN, "-m", "lorif_cli.main"]
    res = subprocess.run(
        command(model_dirs["llama"], data, out, launcher), env=ENV, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with Index(out) as index:
        assert [p.n for p in index.parts] == [32] * 6 + [8]
        assert index.manifest.build_info["processes"] == 2
        index.verify("full")
    assert_same_answers(out, one_process)


def test_a_killed_rank_is_finished_by_the_same_command(model_dirs, data, one_process, tmp_path):
    out = tmp_path / "killed"
    args = command(model_dirs["llama"], data, out, [sys.executable, "-m", "lorif_cli.main"])
    args.insert(args.index("index") + 2, "--nproc=2")  # the shortcut: launches torchrun itself
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while rows_done(out) < 40 and time.monotonic() < deadline:
        assert proc.poll() is None, "the build ended before a rank could be killed"
        time.sleep(0.01)
    ranks = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "RANK" in p.environ() and p.environ()["RANK"] == "1"
    ]
    assert ranks, "no rank-1 process found"
    ranks[0].send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) != 0
    killed_at = rows_done(out)
    assert 40 <= killed_at < 200, killed_at
    with pytest.raises(Exception, match="unfinished build"):
        Index(out)
    res = subprocess.run(args, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    with Index(out) as index:
        assert len(index) == 200
        # rows kept; a batch spanning two shards may have been cut between them: redone
        resumed = index.manifest.build_info["resumed_rows"]
        assert killed_at - 2 * 3 <= resumed <= killed_at, (resumed, killed_at)
    assert_same_answers(out, one_process)


def test_a_storage_budget_is_chosen_once_for_every_process(model_dirs, data, tmp_path):
    """--bytes-per-example under torchrun: every rank stores the lead's c per layer, and the
    index answers as the one-process build of the same budget."""
    budget = 1408  # between c = 1 and c = 2 in every layer of the tiny Llama at f = 4, bf16
    one = build_index(
        BuildConfig.from_dict(
            {
                "model": str(model_dirs["llama"]),
                "data": str(data),
                "output": str(tmp_path / "one"),
                "shard_size": 32,
                "limit": 64,  # a shard per process
                "bytes_per_example": budget,
                **{k.replace("-", "_"): v for k, v in SETTINGS.items()},
            }
        ),
        progress=False,
    )
    out = tmp_path / "two"
    args = command(model_dirs["llama"], data, out, [*TORCHRUN, "-m", "lorif_cli.main"])
    res = subprocess.run(
        [*args, "--bytes-per-example", str(budget), "--limit", "64"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with Index(out) as two, Index(one) as ref:
        assert two.manifest.build_info["processes"] == 2
        assert two.layout.ranks == ref.layout.ranks and len(set(ref.layout.ranks)) > 1
    assert_same_answers(out, one)
