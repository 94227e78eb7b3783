"""The CLI: happy paths, and one clear error line + non-zero exit for each kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from indexer.build import build_index
from indexer.config import BuildConfig, CurvatureConfig
from tests.helpers import ROOT, assert_one_error_line, run_cli, write_jsonl


def gpt2_index(model_dirs, data_jsonl, out: Path, shard_size: int) -> Path:
    cfg = BuildConfig(
        model=str(model_dirs["gpt2"]),
        data=str(data_jsonl),
        output=str(out),
        proj_factor=4,
        rank=1,
        curvature=CurvatureConfig(rank=8),
        shard_size=shard_size,
    )
    return build_index(cfg, progress=False)


@pytest.fixture(scope="module")
def index_path(model_dirs, data_jsonl, tmp_path_factory) -> Path:
    """One file (format 1)."""
    return gpt2_index(model_dirs, data_jsonl, tmp_path_factory.mktemp("cli") / "idx.h5", 0)


@pytest.fixture(scope="module")
def sharded_path(model_dirs, data_jsonl, tmp_path_factory) -> Path:
    """A directory of 3 shards (format 2)."""
    return gpt2_index(model_dirs, data_jsonl, tmp_path_factory.mktemp("cli") / "idx", 25)


def test_build_info_query(monkeypatch, capsys, model_dirs, data_jsonl, tmp_path):
    out = tmp_path / "x.h5"
    code, stdout, _ = run_cli(
        monkeypatch,
        capsys,
        "index",
        "build",
        "--model",
        str(model_dirs["llama"]),
        "--data",
        str(data_jsonl),
        "--output",
        str(out),
        "--proj-factor",
        "4",
        "--rank",
        "2",
        "--curvature-rank",
        "8",
        "--limit",
        "30",
    )
    assert code == 0 and out.exists() and "examples (N)   30" in stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, "index", "info", str(out), "--json")
    info = json.loads(stdout)
    assert code == 0 and info["n_examples"] == 30 and info["rank_c"] == 2
    text = json.loads(data_jsonl.read_text().splitlines()[1])["text"]
    code, stdout, _ = run_cli(
        monkeypatch, capsys, "query", str(out), text, "-k", "3", "--json", "--full-text"
    )
    res = json.loads(stdout)
    assert code == 0 and len(res["proponents"]) == 3 and len(res["opponents"]) == 3
    assert res["proponents"][0]["example_id"] == 1 and res["proponents"][0]["text"] == text
    scores = [r["score"] for r in res["proponents"]]
    assert scores == sorted(scores, reverse=True)
    code, stdout, _ = run_cli(
        monkeypatch,
        capsys,
        "query",
        str(out),
        "the king ",
        "--completion",
        "and the queen.",
        "-k",
        "2",
    )
    assert code == 0 and "proponents:" in stdout and "opponents:" in stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, "index", "verify", str(out))
    assert code == 0 and stdout.startswith("ok:")


def damaged(index_path: Path, tmp_path: Path, how: str) -> Path:
    """A damaged copy: of the file, or of a sharded index's middle shard (its manifest for
    ``version``)."""
    if index_path.is_dir():
        shutil.copytree(index_path, tmp_path / how)
        if how == "version":
            manifest = tmp_path / how / "manifest.json"
            manifest.write_text(
                manifest.read_text().replace('"format_version": 2', '"format_version": 99')
            )
            return tmp_path / how
        damaged(tmp_path / how / "shards" / "00001.h5", tmp_path / how / "shards", how)
        (tmp_path / how / "shards" / f"{how}.h5").replace(tmp_path / how / "shards" / "00001.h5")
        return tmp_path / how
    p = tmp_path / f"{how}.h5"
    shutil.copy(index_path, p)
    if how == "truncated":
        with open(p, "r+b") as fh:
            fh.truncate(p.stat().st_size // 2)
    elif how == "corrupted":
        with open(p, "r+b") as fh:
            fh.write(b"\x00garbage" * 64)
    elif how == "version":
        with h5py.File(p, "r+") as f:
            f.attrs["format_version"] = 99
    return p


@pytest.mark.parametrize(
    "how,pattern",
    [
        ("truncated", "truncated"),
        ("corrupted", "not a readable index file"),
        ("version", "format version 99 is not supported"),
    ],
)
@pytest.mark.parametrize("command", ["info", "query"])
@pytest.mark.parametrize("layout", ["file", "sharded"])
def test_damaged_index_files(
    monkeypatch, capsys, index_path, sharded_path, tmp_path, how, pattern, command, layout
):
    p = damaged(index_path if layout == "file" else sharded_path, tmp_path, how)
    args = ["index", "info", str(p)] if command == "info" else ["query", str(p), "hello"]
    assert_one_error_line(*run_cli(monkeypatch, capsys, *args)[::2], pattern)


def test_not_an_hdf5_file_and_missing(monkeypatch, capsys, tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    assert_one_error_line(
        *run_cli(monkeypatch, capsys, "index", "info", str(junk))[::2], "not a readable index file"
    )
    assert_one_error_line(
        *run_cli(monkeypatch, capsys, "index", "info", str(tmp_path / "nope.h5"))[::2],
        "index not found",
    )


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("missing_model", "model not found"),
        ("empty_data", "the dataset is empty"),
        ("bad_glob", "match no Linear/Conv1D layer"),
        ("rank_too_big", "exceeds min(d1, d2)"),
        ("budget_too_small", "--bytes-per-example 100 is less than c = 1 in every tracked"),
        ("bad_record", "needs a 'text' field"),
        ("exists", "already exists"),
    ],
)
def test_build_errors_leave_no_index(
    monkeypatch, capsys, model_dirs, data_jsonl, tmp_path, index_path, case, pattern
):
    out = tmp_path / "out.h5"
    args = {
        "--model": str(model_dirs["llama"]),
        "--data": str(data_jsonl),
        "--output": str(out),
        "--proj-factor": "4",
    }
    if case == "missing_model":
        args["--model"] = str(tmp_path / "no-such-model")
    elif case == "empty_data":
        args["--data"] = str(write_jsonl(tmp_path / "empty.jsonl", []))
    elif case == "bad_glob":
        args["--layers"] = "*does_not_exist*"
    elif case == "rank_too_big":
        args["--rank"] = "9"  # min(d1, d2) = 4 for k_proj (32 -> 16, f = 4)
    elif case == "budget_too_small":
        args["--bytes-per-example"] = "100"
    elif case == "bad_record":
        args["--data"] = str(write_jsonl(tmp_path / "bad.jsonl", [{"title": "x"}]))
    elif case == "exists":
        args["--output"] = str(index_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    flat = [x for kv in args.items() for x in kv]
    code, _, err = run_cli(monkeypatch, capsys, "index", "build", *flat)
    assert_one_error_line(code, err, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_console_script_exit_code(tmp_path):
    exe = Path(sys.executable).parent / "lorif"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lorif_cli.main"]
    res = subprocess.run(
        [*cmd, "index", "info", str(tmp_path / "missing.h5")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: index not found: {tmp_path / 'missing.h5'}"


def test_version_help_and_model_names(monkeypatch, capsys):
    """`lorif --version`; `query --help` names what an index is; an unknown model lists the
    short names `--model` takes."""
    from indexer.errors import ModelLoadError
    from indexer.models.loading import locate_model
    from tests.helpers import run_cli

    code, out, _ = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == "lorif 0.1.0"
    code, out, _ = run_cli(monkeypatch, capsys, "query", "--help")
    assert code == 0 and "directory of shards, or one file" in " ".join(out.split())
    with pytest.raises(ModelLoadError, match="short name: .*shakespeare-llama.*smollm2"):
        locate_model("no-such-model")
