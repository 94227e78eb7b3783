"""Verbatim evidence beside influence: where the query's words occur word for word in the
training data (as OLMoTrace shows for LLM outputs). Influence is not retrieval — a famous
line's own speech need not be its strongest influence — so the service shows both.

A SQLite FTS5 table (Python's standard library) over every example's text, rowid = example
id, written next to the index (``verbatim.sqlite`` in a sharded index's directory, or
``INDEX.verbatim.sqlite`` beside a single file). A query's words (\\w+, case-folded, as FTS5's
unicode61 tokenizer splits them) are matched as phrases: for every start word the longest run
that occurs in some example (binary search: a sub-run of a match matches), keeping the maximal
runs of at least ``MIN_WORDS`` words.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import Example
from .errors import IndexFormatError
from .storage.reader import Index

MIN_WORDS = 4  # shorter runs ("of the king") are everywhere: not evidence
MAX_QUERY_WORDS = 128
OPEN, CLOSE = "\x02", "\x03"  # highlight markers (not in any text)
WORD = re.compile(r"\w+")


def _covers(index: Index) -> list[str]:
    """What the table's rows must match: the shards' fingerprints in order (their rows and
    examples), or the single file's fingerprint."""
    return index.part_fingerprints


def build_verbatim(index: Index, batch: int = 4096) -> dict[str, Any]:
    """(Re)write the verbatim table of ``index`` (atomically); returns its summary. Rows of
    shards an existing table already covers are kept, so `lorif index add` only adds."""
    t0, out = time.perf_counter(), index.verbatim_path
    tmp = out.with_name(out.name + ".partial")
    tmp.unlink(missing_ok=True)
    covers, start = _covers(index), 0
    old = _read_meta(out) if out.exists() else None
    if old and index.sharded and covers[: len(old["covers"])] == old["covers"]:
        tmp.write_bytes(out.read_bytes())
        start = int(old["n_examples"])
    with sqlite3.connect(tmp) as db:
        db.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS texts USING fts5(text, "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        for s in range(start, len(index), batch):
            ids = list(range(s, min(s + batch, len(index))))
            rows = [
                (i, ex.prompt + ex.completion)
                for i, ex in zip(ids, index.examples_at(ids), strict=True)
            ]
            db.executemany("INSERT INTO texts(rowid, text) VALUES (?, ?)", rows)
        db.execute("INSERT INTO texts(texts) VALUES ('optimize')")
        meta = {
            "covers": covers,
            "n_examples": len(index),
            "build_seconds": round(time.perf_counter() - t0, 3),
            "added_rows": len(index) - start,
        }
        db.execute("INSERT OR REPLACE INTO meta VALUES ('summary', ?)", (json.dumps(meta),))
    os.replace(tmp, out)
    return {**meta, "bytes": out.stat().st_size, "path": str(out)}


def publish_verbatim(path: str | Path) -> dict[str, Any]:
    """Build (or extend) the verbatim table of the index just published at ``path``."""
    with Index(path) as index:
        return build_verbatim(index)


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return _read_meta_from(db)
    except (sqlite3.Error, TypeError, ValueError):
        return None
    finally:
        db.close()


def _read_meta_from(db: sqlite3.Connection) -> dict[str, Any]:
    (raw,) = db.execute("SELECT value FROM meta WHERE key = 'summary'").fetchone()
    meta: dict[str, Any] = json.loads(raw)
    return meta


def verbatim_summary(index: Index) -> dict[str, Any] | None:
    """Size, build time and freshness of ``index``'s verbatim table (None: there is none)."""
    path = index.verbatim_path
    meta = _read_meta(path) if path.exists() else None
    if meta is None:
        return None
    return {
        "bytes": path.stat().st_size,
        "build_seconds": meta["build_seconds"],
        "n_examples": meta["n_examples"],
        "current": meta["covers"] == _covers(index),
    }


@dataclass
class VerbatimMatch:
    example_id: int
    words: int  # length of the longest run of query words the example contains
    text: str  # that run as the example spells it
    start: int  # its character offsets in the example's text
    end: int


class VerbatimIndex:
    """Read-only phrase search over an index's texts. One connection, opened at once: a table
    rebuilt since (``lorif index add``) is not what this one reads, so its answers stay those
    of the version it was opened for."""

    def __init__(self, path: Path):
        self.path = path
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._conn.execute("SELECT count(*) FROM meta").fetchone()  # opens the file now
        self._lock = threading.Lock()

    @classmethod
    def open_for(cls, index: Index) -> VerbatimIndex:
        """The index's verbatim table; IndexFormatError when missing or stale."""
        summary = verbatim_summary(index)
        if summary is None or not summary["current"]:
            what = "no verbatim table" if summary is None else "a stale verbatim table"
            raise IndexFormatError(
                f"{index.path}: {what} (build it with `lorif index verbatim {index.path}`)"
            )
        table = cls(index.verbatim_path)
        if _read_meta_from(table._conn)["covers"] != _covers(index):  # replaced meanwhile
            table.close()
            raise IndexFormatError(f"{index.path}: the verbatim table changed while opening")
        return table

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _any(self, words: list[str]) -> bool:
        q = '"' + " ".join(words) + '"'
        return bool(self._rows("SELECT 1 FROM texts WHERE texts MATCH ? LIMIT 1", (q,)))

    def runs(self, text: str) -> list[tuple[int, int, list[str]]]:
        """Maximal runs (start, end, words) of the query's words found in the data, longest
        first."""
        words = [w.lower() for w in WORD.findall(text)][:MAX_QUERY_WORDS]
        out: list[tuple[int, int, list[str]]] = []
        last_end = 0
        for s in range(len(words) - MIN_WORDS + 1):
            lo = max(s + MIN_WORDS, last_end)  # words[s:last_end] matches if last_end > s
            if lo > len(words) or not self._any(words[s:lo]):
                continue
            hi = len(words)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if self._any(words[s:mid]) else (lo, mid - 1)
            if lo > last_end:
                out.append((s, lo, words[s:lo]))
                last_end = lo
        return sorted(out, key=lambda r: (r[0] - r[1], r[0]))

    def search(
        self,
        text: str,
        limit: int = 10,
        among: list[int] | None = None,
        runs: list[tuple[int, int, list[str]]] | None = None,
    ) -> list[VerbatimMatch]:
        """Examples holding the query's longest runs (each example once, with its longest
        run), longest first; ``among``: only these example ids; ``runs``: ``self.runs(text)``
        when the caller has them already."""
        found: dict[int, VerbatimMatch] = {}
        restrict = ""
        if among is not None:
            restrict = (
                f" AND rowid IN ({','.join(str(int(i)) for i in among)})" if among else " AND 0"
            )
        for _, _, words in self.runs(text) if runs is None else runs:
            q = '"' + " ".join(words) + '"'
            rows = self._rows(
                f"SELECT rowid, highlight(texts, 0, ?, ?) FROM texts WHERE texts MATCH ?{restrict} "
                "ORDER BY rowid LIMIT ?",
                (OPEN, CLOSE, q, limit),
            )
            for rowid, marked in rows:
                if rowid in found:
                    continue
                start = marked.index(OPEN)
                end = marked.index(CLOSE) - 1
                plain = marked.replace(OPEN, "").replace(CLOSE, "")
                found[rowid] = VerbatimMatch(int(rowid), len(words), plain[start:end], start, end)
            if len(found) >= limit and among is None:
                break
        return sorted(found.values(), key=lambda m: (-m.words, m.example_id))[:limit]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


PANEL = 10  # examples listed as verbatim evidence


def verbatim_evidence(
    table: VerbatimIndex,
    text: str,
    ids: Sequence[int],
    examples_at: Callable[[list[int]], list[Example]],
    snippet_chars: int = 240,
) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """(the PANEL examples holding the longest runs of ``text``'s words, as answer rows
    ``{example_id, words, text, start, end, snippet, meta}``; {id: words} for those of the
    shown results ``ids`` that hold a run)."""
    runs = table.runs(text)  # the phrase queries, once for both lists
    panel = table.search(text, PANEL, runs=runs)
    marks = {m.example_id: m.words for m in table.search(text, len(ids), list(ids), runs=runs)}
    examples = examples_at([m.example_id for m in panel])
    rows = [
        {
            "example_id": m.example_id,
            "words": m.words,
            "text": m.text,
            "start": m.start,
            "end": m.end,
            "snippet": around(ex.text, m.start, m.end, snippet_chars),
            "meta": ex.meta,
        }
        for m, ex in zip(panel, examples, strict=True)
    ]
    return rows, marks


def around(text: str, start: int, end: int, chars: int) -> str:
    """About ``chars`` characters of ``text`` centred on [start, end)."""
    if len(text) <= chars:
        return text
    pad = max(0, (chars - (end - start)) // 2)
    lo, hi = max(0, start - pad), min(len(text), end + pad)
    return ("…" if lo else "") + text[lo:hi] + ("…" if hi < len(text) else "")
