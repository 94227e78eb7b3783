"""Shared fixtures: tiny Llama-style (nn.Linear) and GPT-2-style (Conv1D) models built here."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from indexer.build import build_index  # noqa: E402
from indexer.config import BuildConfig  # noqa: E402
from indexer.toy import save_lm, tiny_lm, train_tokenizer  # noqa: E402

WORDS = ("king queen castle sword night moon love death crown blood storm sea ship honour "
         "grief joy fool wit gold silver horse field war peace heart tongue eye hand").split()


def make_corpus(n: int, seed: int = 0) -> list[str]:
    """Short varied sentences (lengths 3..25 words) over a small vocabulary."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) + "."
            for _ in range(n)]


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_corpus(400)


@pytest.fixture(scope="session")
def tokenizer(corpus):
    return train_tokenizer(corpus, vocab_size=300)


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def arch(request) -> str:
    return request.param


def make_model(arch: str, tokenizer, seed: int = 0) -> torch.nn.Module:
    return tiny_lm(arch, len(tokenizer), hidden=32, layers=2, heads=4, seed=seed)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Saved tiny models (HF directories) per architecture."""
    root = tmp_path_factory.mktemp("models")
    return {a: save_lm(make_model(a, tokenizer), tokenizer, root / a) for a in ("llama", "gpt2")}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="session")
def data_jsonl(tmp_path_factory, corpus) -> Path:
    """60 examples: plain texts and prompt/completion pairs, with metadata."""
    rows = []
    for i, text in enumerate(corpus[:60]):
        if i % 3 == 0:
            words = text.split()
            cut = max(1, len(words) // 2)
            rows.append({"prompt": " ".join(words[:cut]) + " ", "completion": " ".join(words[cut:]),
                         "source": "pair", "n": i})
        else:
            rows.append({"text": text, "source": "text", "n": i})
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", rows)


@pytest.fixture(scope="session")
def small_index(model_dirs, data_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "small.h5"
    cfg = BuildConfig(model=str(model_dirs["llama"]), data=str(data_jsonl), output=str(out),
                      proj_factor=4, rank=2, curvature_rank=16, batch_size=8)
    build_index(cfg, progress=False)
    return out


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only with LORIF_SLOW=1 (or when selected with -m slow)."""
    if os.environ.get("LORIF_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set LORIF_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
