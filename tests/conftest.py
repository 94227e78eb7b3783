"""Shared fixtures: tiny Llama-style (nn.Linear) and GPT-2-style (Conv1D) models built here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from indexer.build import build_index
from indexer.config import BuildConfig, CurvatureConfig
from lorif_demo.toy import save_lm, train_tokenizer

from .helpers import make_corpus, make_model, write_jsonl


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_corpus(400)


@pytest.fixture(scope="session")
def tokenizer(corpus):
    return train_tokenizer(corpus, vocab_size=300)


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Saved tiny models (HF directories) per architecture."""
    root = tmp_path_factory.mktemp("models")
    return {a: save_lm(make_model(a, tokenizer), tokenizer, root / a) for a in ("llama", "gpt2")}


@pytest.fixture(scope="session")
def data_jsonl(tmp_path_factory, corpus) -> Path:
    """60 examples: plain texts and prompt/completion pairs, with metadata."""
    rows = []
    for i, text in enumerate(corpus[:60]):
        if i % 3 == 0:
            words = text.split()
            cut = max(1, len(words) // 2)
            rows.append(
                {
                    "prompt": " ".join(words[:cut]) + " ",
                    "completion": " ".join(words[cut:]),
                    "source": "pair",
                    "n": i,
                }
            )
        else:
            rows.append({"text": text, "source": "text", "n": i})
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", rows)


def small_config(model_dirs, data_jsonl, out: Path, shard_size: int) -> BuildConfig:
    return BuildConfig(
        model=str(model_dirs["llama"]),
        data=str(data_jsonl),
        output=str(out),
        proj_factor=4,
        rank=2,
        curvature=CurvatureConfig(rank=16),
        batch_size=8,
        shard_size=shard_size,
    )


@pytest.fixture(scope="session")
def small_index(model_dirs, data_jsonl, tmp_path_factory):
    """One file (format 1): tests read its arrays. Its content sharded: small_sharded_index."""
    out = tmp_path_factory.mktemp("idx") / "small.h5"
    build_index(small_config(model_dirs, data_jsonl, out, 0), progress=False)
    return out


@pytest.fixture(scope="session")
def small_sharded_index(model_dirs, data_jsonl, tmp_path_factory):
    """The small index's content as a directory of 4 shards (format 2)."""
    out = tmp_path_factory.mktemp("idx") / "small"
    build_index(small_config(model_dirs, data_jsonl, out, 16), progress=False)
    return out


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only with LORIF_SLOW=1 (or when selected with -m slow)."""
    if os.environ.get("LORIF_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set LORIF_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
