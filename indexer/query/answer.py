"""The answer to one query, in one shape everywhere: ``POST /v1/attributions``, ``lorif query
--json`` and the Python API (``QueryEngine.answer(...).to_dict()``) all build it here (the HTTP
API's pydantic models in service/protocol.py document the same fields, and a test holds them
equal). Parts:

- ``proponents`` / ``opponents``: rows ``{rank, example_id, score, snippet, meta}`` (+ ``text``,
  the full text, when asked; + ``verbatim_words`` where the example holds a run of the query's
  words);
- ``score_histogram``: where all N scores lie (engine/summary.py's bins, the empty ends cut);
- ``totals``: all N scores summed per value of a metadata key, when asked;
- ``provenance``: what reproduces the answer (index, model, preconditioner, options, query).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .. import __version__
from ..data import Example, snippet
from ..engine.scoring import ScoreResult
from ..engine.summary import Totals, bin_edges
from ..errors import IndexFormatError
from ..verbatim import VerbatimIndex, verbatim_evidence
from .options import QueryOptions

if TYPE_CHECKING:
    from .engine import QueryEngine

SNIPPET_CHARS = 240
TOTALS_SHOWN = 25  # values listed at each end of a totals ranking


def result_row(
    rank: int,
    example_id: int,
    score: float,
    example: Example,
    snippet_chars: int = SNIPPET_CHARS,
    full_text: bool = False,
) -> dict[str, Any]:
    """One ranked result."""
    row: dict[str, Any] = {
        "rank": rank,
        "example_id": example_id,
        "score": score,
        "snippet": snippet(example.text, snippet_chars),
        "meta": example.meta,
    }
    if full_text:
        row["text"] = example.text
    return row


def histogram_dict(counts: npt.NDArray[np.int64]) -> dict[str, Any]:
    """``counts`` (N_BINS,) -> {n, edges, counts}: the bins from the first to the last that
    holds a score (edges has one more entry than counts)."""
    nonzero = np.flatnonzero(counts)
    lo, hi = (int(nonzero[0]), int(nonzero[-1])) if len(nonzero) else (0, -1)
    edges = bin_edges()
    return {
        "n": int(counts.sum()),
        "edges": edges[lo : hi + 2] if hi >= lo else [],
        "counts": [int(c) for c in counts[lo : hi + 1]],
    }


def totals_dict(totals: Totals) -> dict[str, Any]:
    """{key, groups, rows, highest, lowest}: the values with the largest and smallest score
    sums over all N rows (``TOTALS_SHOWN`` each; fewer values: all of them in ``highest``)."""
    sums = np.asarray(totals.sums, dtype=np.float64)
    order = [int(i) for i in np.argsort(-sums, kind="stable")]

    def entry(i: int) -> dict[str, Any]:
        n = int(totals.counts[i])
        return {"value": totals.values[i], "rows": n, "sum": float(sums[i]),
                "mean": float(sums[i] / n) if n else 0.0}  # fmt: skip

    many = len(order) > 2 * TOTALS_SHOWN
    return {
        "key": totals.key,
        "groups": len(order),
        "rows": int(totals.counts.sum()),
        "highest": [entry(i) for i in (order[:TOTALS_SHOWN] if many else order)],
        "lowest": [entry(i) for i in reversed(order[-TOTALS_SHOWN:])] if many else [],
    }


def provenance(
    summary: dict[str, Any],
    query: Example,
    options: QueryOptions,
    damping: float | None,
    version: int | None = None,
) -> dict[str, Any]:
    """What reproduces an answer: the index (its ``summary()``: fingerprint, model,
    preconditioner), this server's version of it, the options and the query."""
    curvature = summary["curvature"]
    return {
        "index_fingerprint": summary["fingerprint"],
        "index_version": version,
        "index_rows": summary["n_examples"],
        "index_created": summary.get("created"),
        "model": summary["model"].get("spec"),
        "model_fingerprint": summary["model"].get("fingerprint"),
        "preconditioner": curvature,
        "curvature_rank_r": summary["curvature_rank_r"],
        "rank_c": summary["rank_c"],
        "damping": damping,
        "normalize": options.normalize,
        "k": options.k,
        "direction": options.direction,
        "query_rank": options.query_rank,
        "totals_by": options.totals_by,
        "query": request_form(query),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "lorif_version": __version__,
    }


def request_form(query: Example) -> dict[str, str | None]:
    """The query as the API takes it (``query_example``'s inverse): a prompt alone when every
    token counts."""
    if query.prompt:
        return {"prompt": query.prompt, "completion": query.completion}
    return {"prompt": query.completion, "completion": None}


@dataclass
class Answer:
    """One query's answer (see the module docstring); ``to_dict()`` is its JSON."""

    index_fingerprint: str
    query_tokens: int
    scoring: dict[str, Any]
    provenance: dict[str, Any]
    proponents: list[dict[str, Any]] | None = None
    opponents: list[dict[str, Any]] | None = None
    verbatim: list[dict[str, Any]] | None = None
    score_histogram: dict[str, Any] | None = None
    totals: dict[str, Any] | None = None
    cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object; a field that is None is left out, at every depth (as the HTTP
        API renders it)."""
        return _without_none(self.__dict__)


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def answer_queries(
    engine: QueryEngine,
    queries: list[Example],
    options: QueryOptions,
    full_text: bool = False,
    keep_scores: bool = False,
) -> tuple[list[Answer], ScoreResult]:
    """One timed scan for ``queries`` under canonical ``options`` (``engine.options_for``):
    their answers, and the scan's result (its (Q, N) ``scores`` with ``keep_scores``)."""
    o = options
    t0 = time.perf_counter()
    p, scale = engine.prepared_for(queries, o)
    t1 = time.perf_counter()
    result = engine.scan(p, o.k, keep_scores, 0, o.query_rank, o.candidates, scale, o.totals_by)
    t2 = time.perf_counter()
    timings = {"queue_ms": 0.0, "featurize_ms": (t1 - t0) * 1e3, "scan_ms": (t2 - t1) * 1e3,
               "total_ms": (t2 - t0) * 1e3}  # fmt: skip
    return answers_of(engine, result, queries, o, full_text, timings), result


def answers_of(
    engine: QueryEngine,
    result: ScoreResult,
    queries: list[Example],
    options: QueryOptions,
    full_text: bool = False,
    timings: dict[str, float] | None = None,
) -> list[Answer]:
    """Each query's Answer from one scan's ``result`` (``options`` canonical for the index:
    ``engine.options_for``); verbatim evidence when ``options.verbatim`` and the index has a
    current verbatim table."""
    summary = engine.index.summary()
    damping = options.reported_damping(engine.index.curvature_record)
    table = _verbatim_table(engine) if options.verbatim else None
    out = []
    try:
        for q, query in enumerate(queries):
            lists = _ranked(engine, result, q, options, full_text)
            found = None if table is None else _mark_verbatim(engine, table, query, lists)
            residual = None if result.residual is None else float(result.residual[q])
            histogram = None if result.histogram is None else histogram_dict(result.histogram[q])
            out.append(
                Answer(
                    index_fingerprint=engine.index.fingerprint,
                    query_tokens=engine.query_tokens(query),
                    scoring=scoring_dict(options, damping, residual),
                    provenance=provenance(summary, query, options, damping),
                    proponents=lists["proponents"],
                    opponents=lists["opponents"],
                    verbatim=found,
                    score_histogram=histogram,
                    totals=None if result.totals is None else totals_dict(result.totals.row(q)),
                    timings=dict(timings or {}),
                )
            )
    finally:
        if table is not None:
            table.close()
    return out


def _ranked(
    engine: QueryEngine, result: ScoreResult, q: int, options: QueryOptions, full_text: bool
) -> dict[str, list[dict[str, Any]] | None]:
    """Query ``q``'s result rows per direction (None: a direction not asked for)."""
    lists: dict[str, list[dict[str, Any]] | None] = {"proponents": None, "opponents": None}
    for direction in lists:
        if options.direction in (direction, "both"):
            top = top_rows(result, q, direction)[: options.k]
            examples = engine.index.examples_at([i for i, _ in top])
            lists[direction] = [
                result_row(r, i, s, ex, full_text=full_text)
                for r, ((i, s), ex) in enumerate(zip(top, examples, strict=True), 1)
            ]
    return lists


def _mark_verbatim(
    engine: QueryEngine,
    table: VerbatimIndex,
    query: Example,
    lists: dict[str, list[dict[str, Any]] | None],
) -> list[dict[str, Any]]:
    """The verbatim panel's rows; marks the shown rows that hold a run of the query's words."""
    shown = [row for rows in lists.values() for row in rows or []]
    ids = [r["example_id"] for r in shown]
    found, marks = verbatim_evidence(table, query.text, ids, engine.index.examples_at)
    for row in shown:
        if row["example_id"] in marks:
            row["verbatim_words"] = marks[row["example_id"]]
    return found


def top_rows(result: ScoreResult, q: int, direction: str = "proponents") -> list[tuple[int, float]]:
    """(id, score) of query ``q``'s top-k in one direction, best first."""
    ids, scores = (
        (result.proponent_ids, result.proponent_scores)
        if direction == "proponents"
        else (result.opponent_ids, result.opponent_scores)
    )
    return [(int(i), float(s)) for i, s in zip(ids[q], scores[q], strict=True) if np.isfinite(s)]


def scoring_dict(
    options: QueryOptions, damping: float | None, residual: float | None
) -> dict[str, Any]:
    """How the scores were computed (the API's ``scoring``)."""
    out: dict[str, Any] = {
        "path": options.path,
        "normalize": options.normalize,
        "damping": damping,
        "query_rank": options.query_rank,
    }
    if residual is not None:
        out["residual"] = residual
    return out


def _verbatim_table(engine: QueryEngine) -> VerbatimIndex | None:
    try:
        return VerbatimIndex.open_for(engine.index)
    except IndexFormatError:
        return None
