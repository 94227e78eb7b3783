"""How a scored answer is keyed and stored in a result cache (LRU or Redis): compact bytes,
checked when read back (another format or a damaged value is a miss, never an answer)."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from indexer import N_BINS, Example, QueryOptions, Totals

from .scorer import Scored

CACHE_FORMAT = 4
_MAGIC = b"LRF"
# magic, format, k, residual (NaN = exact), query tokens, first histogram bin, bins, totals bytes
_HEAD = struct.Struct("<3sBIfIIII")


def query_key(content_id: str, example: Example, options: QueryOptions) -> str:
    """Cache key: format version, the index's content id (what this server verified it reads,
    see Runtime.start), the options that change the scores (canonical for the index) and the
    query's hash."""
    text = hashlib.sha256(json.dumps([example.prompt, example.completion]).encode()).hexdigest()
    return f"lorif:v{CACHE_FORMAT}:{content_id}:{options.scoring_key()}:{text}"


def serialize(s: Scored) -> bytes:
    """Compact value: a 28-byte head, ids (int32) and scores (float32) both ways (16 k
    bytes), the histogram's span of bins that hold scores (int32 each) and the totals (JSON)."""
    k = len(s.proponent_ids)
    residual = float("nan") if s.residual is None else s.residual
    hist = np.zeros(0, np.int64) if s.histogram is None else s.histogram
    nonzero = np.flatnonzero(hist)
    lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if len(nonzero) else (0, 0)
    totals = b"" if s.totals is None else _totals_json(s.totals)
    head = _HEAD.pack(_MAGIC, CACHE_FORMAT, k, residual, s.n_tokens, lo, hi - lo, len(totals))
    span = hist[lo:hi].astype("<i4").tobytes()
    return (
        head
        + b"".join(
            np.ascontiguousarray(a, dtype=d).tobytes()
            for a, d in (
                (s.proponent_ids, "<i4"),
                (s.proponent_scores, "<f4"),
                (s.opponent_ids, "<i4"),
                (s.opponent_scores, "<f4"),
            )
        )
        + span
        + totals
    )


def _totals_json(t: Totals) -> bytes:
    return json.dumps(
        {"key": t.key, "values": t.values, "counts": t.counts.tolist(), "sums": t.sums.tolist()}
    ).encode()


def _totals(raw: bytes) -> Totals:
    d = json.loads(raw)
    counts, sums = np.array(d["counts"], np.int64), np.array(d["sums"], np.float64)
    return Totals(d["key"], d["values"], counts, sums)


def deserialize(raw: bytes) -> Scored | None:
    """The Scored value of ``serialize``; None for bytes of another format or length, or
    with non-finite scores (never served from a cache)."""
    if len(raw) < _HEAD.size:
        return None
    magic, version, k, residual, n_tokens, lo, bins, n_totals = _HEAD.unpack_from(raw)
    end = _HEAD.size + 16 * k + 4 * bins
    if magic != _MAGIC or version != CACHE_FORMAT or len(raw) != end + n_totals:
        return None
    histogram = np.zeros(N_BINS, np.int64)
    if bins:
        span = np.frombuffer(raw, "<i4", bins, _HEAD.size + 16 * k)
        histogram[lo : lo + bins] = span
    try:
        totals = _totals(raw[end:]) if n_totals else None
    except (ValueError, KeyError, TypeError):
        return None
    parts = [
        np.frombuffer(raw, dtype=d, count=k, offset=_HEAD.size + 4 * k * i)
        for i, d in enumerate(("<i4", "<f4", "<i4", "<f4"))
    ]
    value = Scored(
        parts[0].astype(np.int64),
        parts[1],
        parts[2].astype(np.int64),
        parts[3],
        0,
        0,
        residual=None if np.isnan(residual) else residual,
        n_tokens=n_tokens,
        histogram=histogram if bins else None,
        totals=totals,
    )
    return value if value.finite else None
