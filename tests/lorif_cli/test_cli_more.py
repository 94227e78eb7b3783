"""The CLI beyond the basics: every score of many queries as a .npy, max tokens clamped to the
model's context, and usage errors as one line (issue: hardening, items 8 and 11)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.data import Example, load_examples
from indexer.query import QueryEngine
from lorif_demo.toy import save_lm, tiny_lm
from tests.helpers import assert_one_error_line, run_cli, write_jsonl
from tests.lorif_cli.test_cli import index_path  # noqa: F401 - the module fixture


def test_all_scores_of_a_file_of_queries(monkeypatch, capsys, index_path, data_jsonl, tmp_path):  # noqa: F811
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"text": "the king and the queen."},
            {"prompt": "storm ", "completion": "night."},
            {"text": "gold silver horse."},
        ],
    )
    out = tmp_path / "scores" / "all.npy"
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        "query",
        str(index_path),
        "--queries",
        str(queries),
        "--all-scores",
        "--output",
        str(out),
        "-k",
        "4",
        "--json",
    )
    assert code == 0, err
    scores = np.load(out)
    engine = QueryEngine.open(str(index_path), device="cpu")
    try:
        want = engine.score(load_examples(queries), k=4).scores
        n = len(engine.index)
    finally:
        engine.close()
    assert scores.shape == (3, n) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
    listed = json.loads(stdout)
    assert len(listed) == 3 and [r["example_id"] for r in listed[1]["proponents"]] == list(
        np.argsort(-want[1])[:4]
    )


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["query", "IDX"], "give a PROMPT or --queries"),
        (["query", "IDX", "x", "--all-scores"], "--all-scores and --output go together"),
        (["query", "IDX", "  "], "the query is empty"),
        (["query", "IDX", "the king", "--completion", ""], "the completion is empty"),
        (["index", "build", "--bogus"], "No such option: --bogus"),
        (["query", "IDX", "x", "-k", "abc"], "Invalid value for '-k' / '--k'"),
        (["serve", "IDX", "--verify", "sometimes"], "verify: Input should be 'full', 'fast' or"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
    ],
)
def test_usage_errors_are_one_line(monkeypatch, capsys, index_path, args, pattern):  # noqa: F811
    args = [str(index_path) if a == "IDX" else a for a in args]
    assert_one_error_line(*run_cli(monkeypatch, capsys, *args)[::2], pattern)


def test_max_tokens_clamped_to_the_models_context(monkeypatch, capsys, tokenizer, tmp_path, corpus):
    model = save_lm(tiny_lm("gpt2", len(tokenizer), positions=24), tokenizer, tmp_path / "m")
    long = " ".join(corpus[:20])  # far over 24 tokens
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": long}, {"text": corpus[0]}] * 6)
    out = tmp_path / "short.h5"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "index",
        "build",
        "--model",
        str(model),
        "--data",
        str(data),
        "--output",
        str(out),
        "--proj-factor",
        "4",
        "--curvature-rank",
        "4",
    )
    assert code == 0, err
    assert "longer than the model's context of 24 tokens" in err
    engine = QueryEngine.open(str(out), device="cpu")
    try:
        assert engine.index.manifest.task.max_tokens == 24
        assert engine.index.n_tokens(0) == 24
        assert np.isfinite(engine.score([Example(completion="the king.")], k=2).scores).all()
    finally:
        engine.close()


def test_autocast_build_and_resident_query(monkeypatch, capsys, model_dirs, data_jsonl, tmp_path):
    """--autocast bf16 builds an index recorded as such whose answers stay close to the fp32
    build's; --resident on answers like the streamed scan; a bad --resident is one line."""
    import json

    from indexer import Index

    paths = {}
    for mode in ("none", "bf16"):
        paths[mode] = str(tmp_path / f"{mode}.h5")
        code, _, err = run_cli(
            monkeypatch, capsys, "index", "build", "--model", str(model_dirs["llama"]),
            "--data", str(data_jsonl), "--output", paths[mode], "--proj-factor", "4",
            "--device", "cpu", "--autocast", mode,
        )  # fmt: skip
        assert code == 0, err
    with Index(paths["bf16"]) as index, Index(paths["none"]) as plain:
        assert index.manifest.config().autocast == "bf16"
        mixed, full = index.store().array, plain.store().array
        assert (mixed != full).any(), "--autocast bf16 changed nothing: not applied"
    answers = {}
    for name, path, resident in (("fp32", paths["none"], "off"), ("resident", paths["none"], "on"),
                                 ("bf16", paths["bf16"], "off")):  # fmt: skip
        code, out, err = run_cli(
            monkeypatch, capsys, "query", path, "the king and the queen.", "-k", "5", "--json",
            "--device", "cpu", "--resident", resident,
        )  # fmt: skip
        assert code == 0, err
        answers[name] = json.loads(out)["proponents"]
    ids = {name: [r["example_id"] for r in rows] for name, rows in answers.items()}
    assert ids["resident"] == ids["fp32"]
    assert len(set(ids["bf16"]) & set(ids["fp32"])) >= 4, ids
    code, _, err = run_cli(monkeypatch, capsys, "query", paths["none"], "x", "--resident", "maybe")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--resident" in err
