"""Every example's metadata at once, for what needs all N rows: the scores summed per value of
a key (``codes``), the examples around one in its source (``context``), and the example queries
shown on an empty page (a small JSON file beside the index, ``example_queries.json``).

Context: examples that carry an order key (``ORDER_KEYS``: ``position`` or ``speech_id``, an
integer) are placed by it within their scope (the same values of the ``SCOPE_KEYS`` they carry,
e.g. play, act and scene); examples without one by their ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from .files import write_json

ORDER_KEYS = ("position", "speech_id")
SCOPE_KEYS = ("source", "document", "play", "title", "act", "scene")
MAX_EXAMPLE_QUERIES = 20


class MetaTable:
    """Every example's metadata (N dicts), parsed once."""

    def __init__(self, metas: list[dict[str, Any]]):
        self.metas = metas
        self._codes: dict[str, tuple[npt.NDArray[np.int64], list[str]]] = {}
        self._order: dict[tuple[Any, ...], list[tuple[int, int]]] | None = None

    def codes(self, key: str) -> tuple[npt.NDArray[np.int64], list[str]]:
        """(each row's value code (N,), the values): values as strings, "" where a row lacks
        the key; DataError when no row has it."""
        if key not in self._codes:
            raw = [_value(m.get(key)) for m in self.metas]
            values = sorted(set(raw))
            if values == [""]:
                raise DataError(f"no training example has the metadata key {key!r}")
            at = {v: i for i, v in enumerate(values)}
            self._codes[key] = (np.array([at[v] for v in raw], dtype=np.int64), values)
        return self._codes[key]

    def order_of(self, i: int) -> tuple[tuple[Any, ...], int] | None:
        """(scope, position) of example ``i`` (None: it has no order key)."""
        return self._order_of(self.metas[i])

    def context(self, i: int, n: int) -> list[int]:
        """Ids of up to ``n`` examples before and ``n`` after example ``i`` in its source, in
        order, ``i`` among them."""
        key = self._order_of(self.metas[i])
        if key is None:
            return list(range(max(0, i - n), min(len(self.metas), i + n + 1)))
        ordered = self._ordered()[key[0]]
        at = ordered.index((key[1], i))
        return [j for _, j in ordered[max(0, at - n) : at + n + 1]]

    def _ordered(self) -> dict[tuple[Any, ...], list[tuple[int, int]]]:
        if self._order is None:
            order: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
            for j, m in enumerate(self.metas):
                key = self._order_of(m)
                if key is not None:
                    order.setdefault(key[0], []).append((key[1], j))
            self._order = {k: sorted(v) for k, v in order.items()}
        return self._order

    @staticmethod
    def _order_of(meta: dict[str, Any]) -> tuple[tuple[Any, ...], int] | None:
        """(scope, position) of an example with an integer order key."""
        for k in ORDER_KEYS:
            if isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool):
                return tuple(_value(meta.get(s)) for s in SCOPE_KEYS), int(meta[k])
        return None


def _value(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


@dataclass(frozen=True)
class ExampleQuery:
    prompt: str
    completion: str = ""
    note: str = ""


def example_queries_path(index_path: str | Path) -> Path:
    """Where the example queries of the index at ``index_path`` live."""
    p = Path(index_path)
    return p / "example_queries.json" if p.is_dir() else p.with_name(p.name + ".queries.json")


def write_example_queries(index_path: str | Path, queries: list[ExampleQuery]) -> Path:
    """Store the example queries an empty page offers for this index (checked)."""
    if not 1 <= len(queries) <= MAX_EXAMPLE_QUERIES:
        raise DataError(f"give 1 to {MAX_EXAMPLE_QUERIES} example queries, not {len(queries)}")
    for q in queries:
        if not (q.prompt + q.completion).strip():
            raise DataError("an example query needs a prompt or a completion")
    path = example_queries_path(index_path)
    write_json(path, {"queries": [q.__dict__ for q in queries]})
    return path


def read_example_queries(index_path: str | Path) -> list[ExampleQuery]:
    """The stored example queries ([] when none or unreadable: they are a convenience)."""
    path = example_queries_path(index_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))["queries"]
        return [
            ExampleQuery(str(q["prompt"]), str(q.get("completion") or ""), str(q.get("note") or ""))
            for q in raw
        ][:MAX_EXAMPLE_QUERIES]
    except (OSError, ValueError, TypeError, KeyError):
        return []
