"""The verbatim phrase table (issue 18): written with every build, an exact quote from a
training example finds that example first (case and punctuation aside), short or absent runs
find nothing, a table of other rows is refused as stale, and the CLI builds and reports it."""

from __future__ import annotations

import re
import sqlite3

import pytest

from indexer import Index, VerbatimIndex, build_verbatim, verbatim_summary
from indexer.errors import IndexFormatError
from indexer.storage.format import verbatim_path
from indexer.verbatim import MIN_WORDS
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def table(small_sharded_index):
    with Index(small_sharded_index) as index:
        v = VerbatimIndex.open_for(index)  # the build wrote it
        yield index, v
        v.close()


def long_example(index: Index, words: int = 12) -> tuple[int, str]:
    for i in range(len(index)):
        text = index.example(i).prompt + index.example(i).completion
        if len(text.split()) >= words:
            return i, text
    raise AssertionError("no example long enough")


def test_an_exact_quote_finds_its_example_first(table):
    index, v = table
    i, text = long_example(index)
    quote = " ".join(text.split()[2:11])  # 9 words from the middle
    found = v.search(quote.upper().replace(" ", ", "), limit=5)  # case, punctuation aside
    assert found and found[0].example_id == i and found[0].words == 9, found
    assert re.sub(r"\W+", " ", found[0].text).lower().split() == quote.lower().split()
    assert text[found[0].start : found[0].end] == found[0].text
    among = v.search(quote, limit=5, among=[i, (i + 1) % len(index)])
    assert [m.example_id for m in among][:1] == [i]


def test_nothing_without_a_long_enough_run(table):
    _, v = table
    assert v.search("zebra quantum xylophone marmalade pancake", 5) == []
    assert v.search("the king", 5) == []  # fewer than MIN_WORDS words
    assert MIN_WORDS == 4


def test_a_table_of_other_rows_is_stale(small_sharded_index, small_index, tmp_path):
    with Index(small_sharded_index) as index:
        summary = verbatim_summary(index)
        assert summary and summary["current"] and summary["n_examples"] == len(index)
    with Index(small_index) as single:  # a single file: its table sits beside it
        assert verbatim_path(single.path).name == single.path.name + ".verbatim.sqlite"
        other = verbatim_path(single.path)
        copy = tmp_path / "copy.sqlite"
        copy.write_bytes(other.read_bytes())
        with sqlite3.connect(copy) as db:
            db.execute("UPDATE meta SET value = replace(value, ?, 'x')", (single.fingerprint,))
        other.write_bytes(copy.read_bytes())
        with pytest.raises(IndexFormatError, match="stale verbatim table.*lorif index verbatim"):
            VerbatimIndex.open_for(single)
        build_verbatim(single)  # rebuilt: current again
        assert verbatim_summary(single)["current"]


def test_cli_builds_and_reports_it(small_sharded_index, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "index", "verbatim", str(small_sharded_index))
    assert code == 0 and "verbatim table" in out and "rows added" in out
    code, out, _ = run_cli(monkeypatch, capsys, "index", "info", str(small_sharded_index))
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("verbatim"))
    assert "phrase table over 60 examples, built in" in line and "STALE" not in line
