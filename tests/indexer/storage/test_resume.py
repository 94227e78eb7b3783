"""A build killed with SIGKILL resumes to the same arrays; mismatched settings are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from indexer.build import build_index
from indexer.config import BuildConfig, CurvatureConfig
from indexer.storage.format import partial_path
from indexer.storage.reader import Index
from tests.helpers import ROOT, make_corpus, write_jsonl


def build_args(model_dir, data, out, **extra) -> list[str]:
    flags = {
        "model": model_dir,
        "data": data,
        "output": out,
        "proj-factor": 4,
        "rank": 2,
        "curvature-rank": 8,
        "batch-size": 2,
        "seed": 5,
        "shard-size": 0,  # one file; the sharded test passes its own
        **extra,
    }
    args = [sys.executable, "-m", "lorif_cli.main", "index", "build"]
    for k, v in flags.items():
        args += [f"--{k}", str(v)]
    return args


def straight_build(model_dir, data, out, shard_size: int) -> Path:
    """The build of ``build_args``, uninterrupted and in this process."""
    cfg = BuildConfig(
        model=str(model_dir),
        data=str(data),
        output=str(out),
        proj_factor=4,
        rank=2,
        curvature=CurvatureConfig(rank=8),
        batch_size=2,
        seed=5,
        shard_size=shard_size,
    )
    return build_index(cfg, progress=False)


def done_count(partial: Path) -> int:
    try:
        with h5py.File(partial, "r", locking=False) as f:
            offset, n = f["done"].id.get_offset(), f["done"].shape[0]
        return int(np.memmap(partial, dtype=np.uint8, mode="r", offset=offset, shape=(n,)).sum())
    except (OSError, KeyError, TypeError, ValueError):
        return 0  # not created yet


def arrays(path: Path) -> dict[str, np.ndarray]:
    with Index(path) as index:
        factors = np.concatenate([np.array(p.file["factors"]) for p in index.parts])
        out = {"factors": factors, "fingerprint": index.fingerprint}
        for name, c in index.curvature().items():
            out[f"V/{name}"], out[f"s/{name}"], out[f"l/{name}"] = c.V, c.sigma2, c.lam
    return out


@pytest.fixture(scope="module")
def big_data(tmp_path_factory) -> Path:
    rows = [{"text": t, "i": i} for i, t in enumerate(make_corpus(300, seed=11))]
    return write_jsonl(tmp_path_factory.mktemp("resume") / "data.jsonl", rows)


def rows_done(out: Path) -> int:
    """Rows a build of ``out`` has written: its partial file, or its partial shards."""
    if out.is_dir():
        return sum(done_count(p) for p in (out / "shards").glob("*.h5.partial"))
    return done_count(partial_path(out))


def kill_mid_build(model_dir: Path, data: Path, out: Path, env: dict[str, str], **extra) -> int:
    """Start a build in a subprocess, SIGKILL it once 40 rows are done; the rows done."""
    proc = subprocess.Popen(
        build_args(model_dir, data, out, **extra),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while rows_done(out) < 40 and time.monotonic() < deadline:
        assert proc.poll() is None, "build finished before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return rows_done(out)


def run_build(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)


def test_sigkill_then_resume_gives_identical_arrays(model_dirs, big_data, tmp_path):
    from indexer.errors import IndexFormatError

    out = tmp_path / "killed.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed_at = kill_mid_build(model_dirs["llama"], big_data, out, env)
    assert 40 <= killed_at < 300, killed_at
    assert not out.exists() and partial_path(out).exists()
    with pytest.raises(IndexFormatError, match="unfinished build"):
        Index(partial_path(out))

    # A different setting must be refused and leave the partial file untouched.
    before = partial_path(out).read_bytes()
    res = run_build(build_args(model_dirs["llama"], big_data, out, rank=3), env)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "rank" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert partial_path(out).read_bytes() == before

    res = run_build(build_args(model_dirs["llama"], big_data, out), env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.exists() and not partial_path(out).exists()
    with Index(out) as index:
        assert index.manifest.build_info["resumed_rows"] == killed_at

    ref = tmp_path / "straight.h5"
    straight_build(model_dirs["llama"], big_data, ref, shard_size=0)
    a, b = arrays(out), arrays(ref)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_sharded_build_killed_then_resumed_is_the_straight_build(model_dirs, big_data, tmp_path):
    from indexer.errors import IndexFormatError

    out, shards = tmp_path / "killed", {"shard-size": 64}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed_at = kill_mid_build(model_dirs["llama"], big_data, out, env, **shards)
    assert 40 <= killed_at < 300, killed_at
    with pytest.raises(IndexFormatError, match="unfinished build"):
        Index(out)
    res = run_build(build_args(model_dirs["llama"], big_data, out, rank=3, **shards), env)
    assert res.returncode == 2 and "rank" in res.stderr, res.stderr[-2000:]
    assert rows_done(out) == killed_at
    res = run_build(build_args(model_dirs["llama"], big_data, out, **shards), env)
    assert res.returncode == 0, res.stderr[-2000:]
    with Index(out) as index:
        # a batch (2 rows) spanning two shards may have been cut between them: redone
        resumed = index.manifest.build_info["resumed_rows"]
        assert killed_at - 1 <= resumed <= killed_at, (resumed, killed_at)
        assert [p.n for p in index.parts] == [64, 64, 64, 64, 44]

    straight = straight_build(model_dirs["llama"], big_data, tmp_path / "straight", shard_size=64)
    a, b = arrays(out), arrays(straight)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
