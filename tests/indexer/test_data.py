"""Loading training data: jsonl and saved HF dataset directories, with clear errors."""

from __future__ import annotations

import pytest

from indexer.data import load_examples
from indexer.errors import DataError
from tests.helpers import write_jsonl


def test_jsonl_text_and_pairs_with_metadata(tmp_path):
    p = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"text": "Hello world.", "play": "Hamlet", "speaker": "HAMLET"},
            {"prompt": "Q: who? ", "completion": "A: me.", "id": 7},
        ],
    )
    a, b = load_examples(p)
    assert (a.prompt, a.completion, a.meta) == (
        "",
        "Hello world.",
        {"play": "Hamlet", "speaker": "HAMLET"},
    )
    assert (b.prompt, b.completion, b.meta) == ("Q: who? ", "A: me.", {"id": 7})
    assert len(load_examples(p, limit=1)) == 1


def test_saved_hf_dataset_directory(tmp_path):
    import datasets

    rows = [{"text": f"line {i}", "play": "Lear"} for i in range(5)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    examples = load_examples(tmp_path / "ds")
    assert [e.completion for e in examples] == [r["text"] for r in rows]
    assert examples[0].meta == {"play": "Lear"}
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:2])}).save_to_disk(
        str(tmp_path / "dd")
    )
    assert len(load_examples(tmp_path / "dd")) == 2


@pytest.mark.parametrize(
    "content,pattern",
    [
        ('{"text": "ok"}\n{broken\n', r"d.jsonl:2: invalid JSON"),
        ('{"text": 3}\n', "must be a string"),
        ('["a"]\n', "expected a JSON object"),
        ("\n\n", "the dataset is empty"),
    ],
)
def test_bad_jsonl(tmp_path, content, pattern):
    p = tmp_path / "d.jsonl"
    p.write_text(content)
    with pytest.raises(DataError, match=pattern):
        load_examples(p)


def test_missing_and_non_dataset_directory(tmp_path):
    with pytest.raises(DataError, match="data not found"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="not a saved HF dataset"):
        load_examples(tmp_path / "empty_dir")
