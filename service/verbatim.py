"""Verbatim evidence in answers: the examples that contain runs of the query's words (a panel
of its own) and, on each ranked result, the longest such run it contains (indexer.verbatim).
Lookups are a few SQLite phrase queries; the last ``size`` queries' answers are kept, so a
cached attribution renders without them."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

from indexer import Index, IndexFormatError, VerbatimIndex

from .cache import ExampleCache
from .protocol import VerbatimResult

PANEL = 10  # examples listed in the verbatim panel
log = logging.getLogger("lorif")


class VerbatimLookup:
    def __init__(
        self, table: VerbatimIndex, examples: ExampleCache, snippet_chars: int, size: int = 1024
    ):
        self.table, self.examples, self.snippet_chars, self.size = (
            table,
            examples,
            snippet_chars,
            size,
        )
        self._answers: OrderedDict[
            tuple[str, tuple[int, ...]], tuple[list[VerbatimResult], dict[int, int]]
        ] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, text: str, ids: Sequence[int]) -> bool:
        with self._lock:
            return (text, tuple(ids)) in self._answers

    def find(self, text: str, ids: Sequence[int]) -> tuple[list[VerbatimResult], dict[int, int]]:
        """(the panel's examples, {result id: words} for the results among ``ids`` that
        contain a run)."""
        key = (text, tuple(ids))
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
        runs = self.table.runs(text)  # the phrase queries, once for both lists
        panel = self.table.search(text, PANEL, runs=runs)
        shown = self.table.search(text, len(ids), list(ids), runs=runs)
        marks = {m.example_id: m.words for m in shown}
        examples = self.examples.get_many([m.example_id for m in panel])
        answer = (
            [
                VerbatimResult(
                    example_id=m.example_id,
                    words=m.words,
                    text=m.text,
                    start=m.start,
                    end=m.end,
                    snippet=_around(ex.text, m.start, m.end, self.snippet_chars),
                    meta=ex.meta,
                )
                for m, ex in zip(panel, examples, strict=True)
            ],
            marks,
        )
        with self._lock:
            self._answers[key] = answer
            if len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return answer

    def close(self) -> None:
        self.table.close()


def open_lookup(index: Index, examples: ExampleCache, snippet_chars: int) -> VerbatimLookup | None:
    """The lookup of ``index``'s verbatim table; None (said in the log) without a current one."""
    try:
        return VerbatimLookup(VerbatimIndex.open_for(index), examples, snippet_chars)
    except IndexFormatError as e:
        log.warning("no verbatim evidence in answers: %s", e)
        return None


def _around(text: str, start: int, end: int, chars: int) -> str:
    """About ``chars`` characters of ``text`` centred on [start, end)."""
    if len(text) <= chars:
        return text
    pad = max(0, (chars - (end - start)) // 2)
    lo, hi = max(0, start - pad), min(len(text), end + pad)
    return ("…" if lo else "") + text[lo:hi] + ("…" if hi < len(text) else "")
