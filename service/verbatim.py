"""Verbatim evidence in answers: the examples that contain runs of the query's words (a panel
of its own) and, on each ranked result, the longest such run it contains (indexer.verbatim).
Lookups are a few SQLite phrase queries; the last ``size`` queries' answers are kept, so a
cached attribution renders without them."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

from indexer import Index, IndexFormatError, VerbatimIndex, verbatim_evidence

from .cache import ExampleCache
from .protocol import VerbatimResult

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
        rows, marks = verbatim_evidence(
            self.table, text, ids, self.examples.get_many, self.snippet_chars
        )
        answer = ([VerbatimResult(**r) for r in rows], marks)
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
