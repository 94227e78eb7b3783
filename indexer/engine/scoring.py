"""Reference scorer: precondition queries once per layer, stream factor blocks, keep top-k.

For query gradients G~_q (Q, d1, d2) per layer:
    z = V^T vec(G~_q);  P_q = (1/lam) [G~_q - mat(V diag(sigma2/(sigma2+lam)) z)]
and for every stored example i:  s(q, i) = sum_layers sum_c l_{i,c}^T P_q r_{i,c}.
Positive = the example lowers the query's loss (proponent); negative = opponent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from .kernels import (
    LowRankQueries,
    layer_groups,
    score_rows,
    score_rows_lowrank,
    sub_rows,
)
from .layout import RowSource
from .lowrank import LayerCurvature
from .packed_scan import (
    Pack,
    pack_block,
    scan_kernel,
    score_packs,
    score_packs_lowrank,
    stacked_queries,
)
from .summary import GroupSums, ScoreHistogram, Totals

__all__ = [
    "LayerPreconditioner",
    "LowRankQueries",
    "Preconditioner",
    "RunningTopK",
    "ScoreResult",
    "precondition",
    "score_rows",
    "score_rows_lowrank",
    "score_store",
]


class Preconditioner(Protocol):
    """H^-1 of one layer (low-rank Woodbury or Kronecker eigenbasis) at damping ``lam``."""

    lam: float

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """g (Q, d1, d2) -> H^-1 g (Q, d1, d2), in g's dtype."""
        ...


@dataclass
class LayerPreconditioner:
    """(V Sigma^2 V^T + lam I)^{-1} of one layer, applied in O(D r)."""

    V: torch.Tensor  # (D, r)
    coef: torch.Tensor  # (r,) sigma2 / (sigma2 + lam)
    lam: float

    @classmethod
    def from_curvature(
        cls, c: LayerCurvature, device: torch.device | str = "cpu", lam: float | None = None
    ) -> LayerPreconditioner:
        """``lam``: another damping than the build's (the basis does not depend on it)."""
        lam = c.lam if lam is None else lam
        sigma2 = torch.as_tensor(c.sigma2, dtype=torch.float64)
        coef = (sigma2 / (sigma2 + lam)).float()
        return cls(torch.as_tensor(c.V, dtype=torch.float32).to(device), coef.to(device), lam)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """g (Q, d1, d2) -> P (Q, d1, d2), computed in g's dtype (float64 for explanations)."""
        flat = g.reshape(g.shape[0], -1)
        if self.V.shape[1]:
            v, coef = self.V.to(g.dtype), self.coef.to(g.dtype)
            flat = flat - ((flat @ v) * coef) @ v.T
        return (flat / self.lam).reshape(g.shape)


def precondition(
    grads: dict[str, torch.Tensor], pre: Mapping[str, Preconditioner]
) -> dict[str, torch.Tensor]:
    return {name: pre[name].apply(g.float()) for name, g in grads.items()}


class RunningTopK:
    """Top-k largest and smallest scores (and their ids) per query, merged block by block."""

    def __init__(self, n_queries: int, k: int, device: torch.device | str = "cpu"):
        self.k = k
        empty_s = torch.empty(n_queries, 0, device=device)
        empty_i = torch.empty(n_queries, 0, dtype=torch.long, device=device)
        self.top_s, self.top_i = empty_s, empty_i
        self.bot_s, self.bot_i = empty_s.clone(), empty_i.clone()

    def update(self, scores: torch.Tensor, start: int) -> None:
        ids = torch.arange(start, start + scores.shape[1], device=scores.device)
        ids = ids.expand(scores.shape[0], -1)
        self.top_s, self.top_i = self._merge(self.top_s, self.top_i, scores, ids, largest=True)
        self.bot_s, self.bot_i = self._merge(self.bot_s, self.bot_i, scores, ids, largest=False)

    def _merge(
        self, s0: torch.Tensor, i0: torch.Tensor, s1: torch.Tensor, i1: torch.Tensor, largest: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s, i = torch.cat([s0, s1], dim=1), torch.cat([i0, i1], dim=1)
        vals, pos = torch.topk(s, min(self.k, s.shape[1]), dim=1, largest=largest, sorted=True)
        return vals, torch.gather(i, 1, pos)


def default_block_rows(device: torch.device) -> int:
    """Rows per streamed block when none is given: CPU 4,096 (a few MB, read ahead by the
    reader thread); CUDA 65,536 (fewer, larger transfers and kernels)."""
    return 65536 if device.type == "cuda" else 4096


@dataclass
class ScoreResult:
    proponent_ids: npt.NDArray[np.int64]  # (Q, k) highest scores first
    proponent_scores: npt.NDArray[np.float32]
    opponent_ids: npt.NDArray[np.int64]  # (Q, k) lowest scores first
    opponent_scores: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32] | None  # (Q, N) every example's score, when requested
    residual: npt.NDArray[np.float64] | None = None  # (Q,) low-rank: what the scan dropped
    histogram: npt.NDArray[np.int64] | None = None  # (Q, summary.N_BINS) of all N scores
    totals: Totals | None = None  # the scores summed per value of a metadata key


def score_store(
    store: RowSource,
    p: dict[str, torch.Tensor],
    k: int | Sequence[int] = 10,
    block_rows: int = 0,
    keep_scores: bool = True,
    device: torch.device | str = "cpu",
    query_rank: int = 0,
    candidates: int = 4,
    row_scale: torch.Tensor | None = None,
    groups: tuple[str, torch.Tensor, list[str]] | None = None,
) -> ScoreResult:
    """Stream the store in blocks and score preconditioned queries ``p`` against every row
    (each row's scores times ``row_scale`` (N,) when given: unit normalisation). Every score
    also goes into a histogram (engine/summary.py) and, with ``groups`` = (metadata key, each
    row's value code (N,), the values), into per-value sums.

    ``k``: results per direction, one for all queries or one per query; the arrays returned
    are (Q, max k) and row q is query q's answer up to its own k, the same answer it gets when
    scanned alone. ``query_rank`` = 0: the exact path. ``query_rank`` > 0: the scan uses
    rank-``query_rank`` queries and keeps ``candidates * k`` candidates per query and
    direction; those rows are then scored exactly, so returned scores are exact and only the
    candidate recall is approximate (``scores``, the histogram and the sums are the
    approximate ones).
    """
    n_queries = next(iter(p.values())).shape[0]
    ks = [k] * n_queries if isinstance(k, int) else [int(x) for x in k]
    lowrank = LowRankQueries.factor(p, query_rank) if query_rank > 0 else None
    width = max(ks) * candidates if lowrank else max(ks)
    top = RunningTopK(n_queries, width, device)
    full = np.empty((n_queries, len(store)), dtype=np.float32) if keep_scores else None
    block_rows = block_rows or default_block_rows(torch.device(device))
    hist = ScoreHistogram(n_queries, device)
    sums = GroupSums(n_queries, groups[1].to(device), len(groups[2])) if groups else None
    for start, s in _block_scores(store, p, lowrank, block_rows, torch.device(device)):
        if row_scale is not None:
            s = s * row_scale[start : start + s.shape[1]].to(s.device)
        top.update(s, start)
        hist.update(s)
        if sums is not None:
            sums.update(s, start)
        if full is not None:
            full[:, start : start + s.shape[1]] = s.cpu().numpy()
    if lowrank:
        top = _rescore(store, p, top, [q_k * candidates for q_k in ks], max(ks), device, row_scale)
    ti, ts, bi, bs = (t.cpu().numpy() for t in (top.top_i, top.top_s, top.bot_i, top.bot_s))
    totals = sums.totals(groups[0], groups[2]) if sums is not None and groups else None
    return ScoreResult(
        ti, ts, bi, bs, full, lowrank.residual if lowrank else None, hist.numpy(), totals
    )


def _block_scores(
    store: RowSource,
    p: dict[str, torch.Tensor],
    lowrank: LowRankQueries | None,
    block_rows: int,
    device: torch.device,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, scores (Q, b)) block by block: packed resident rows by shape group (the fused
    kernel or batched GEMMs, ``packed_scan``), streamed blocks through the same kernel when it
    is Triton, else per block with ``score_rows``."""
    layout, nq = store.layout, next(iter(p.values())).shape[0]
    kernel = scan_kernel(device)
    packed = getattr(store, "packed", None)
    if packed is None and kernel == "torch":
        for start, rows in store.blocks(block_rows, device):
            s = (
                score_rows_lowrank(layout, rows, lowrank)
                if lowrank
                else score_rows(layout, rows, p)
            )
            yield start, s
        return
    groups = layer_groups(layout, str(device))
    pg = stacked_queries(groups, p)

    def score(packs: list[Pack]) -> torch.Tensor:
        if lowrank:
            return score_packs_lowrank(packs, lowrank, kernel)
        return score_packs(packs, pg, nq, kernel)

    if packed is None:
        for start, rows in store.blocks(block_rows, device):
            yield start, score(pack_block(layout, groups, rows))
        return
    # intermediates per row of the batched-GEMM path (the Triton kernel keeps its tiles on chip)
    width = max(1, max(len(g.layers) * g.d1 * g.c for g in groups) * nq)
    # the kernel writes only (Q, step) scores: large steps, few launches
    step = max(block_rows, 1 << 20) if kernel == "triton" else sub_rows(device, width, 1 << 19)
    for start in range(0, len(store), step):
        yield start, score(packed(start, min(start + step, len(store))))


def _rescore(
    store: RowSource,
    p: dict[str, torch.Tensor],
    cand: RunningTopK,
    kept: list[int],
    k: int,
    device: torch.device | str,
    row_scale: torch.Tensor | None = None,
) -> RunningTopK:
    """Exact scores of each query's own candidates, its first ``kept[q]`` per direction (one
    batched product per layer); top-k. Later candidates are masked, so a query's answer does
    not depend on the k of the queries scanned with it."""
    ids = torch.cat([cand.top_i, cand.bot_i], dim=1)  # (Q, 2m)
    union, inverse = torch.unique(ids, return_inverse=True)  # sorted ids; ids = union[inverse]
    rows = store.rows(union.cpu().numpy(), device)[inverse]  # (Q, 2m, W)
    nq, m2 = ids.shape[0], ids.shape[1]
    s = torch.zeros(nq, m2, device=rows.device)
    for i, (t, c) in enumerate(zip(store.layout.layers, store.layout.ranks, strict=True)):
        left, right = store.layout.unpack(rows.reshape(nq * m2, -1), i)
        pr = right.reshape(nq, m2 * c, t.d2) @ p[t.name].transpose(1, 2)  # (Q, 2m*c, d1)
        s += (pr * left.reshape(nq, m2 * c, t.d1)).reshape(nq, m2, c * t.d1).sum(dim=2)
    if row_scale is not None:
        s = s * row_scale.to(s.device)[ids]
    out = RunningTopK(nq, k, device)
    m = cand.top_i.shape[1]
    beyond = (
        torch.arange(m, device=s.device)[None, :] >= torch.tensor(kept, device=s.device)[:, None]
    )
    top_s, bot_s = s[:, :m].masked_fill(beyond, -torch.inf), s[:, m:].masked_fill(beyond, torch.inf)
    out.top_s, out.top_i = out._merge(s[:, :0], ids[:, :0], top_s, ids[:, :m], largest=True)
    out.bot_s, out.bot_i = out._merge(s[:, :0], ids[:, :0], bot_s, ids[:, m:], largest=False)
    return out


def merge_results(parts: Sequence[tuple[int, ScoreResult]], k: int) -> ScoreResult:
    """One answer from the answers of disjoint row ranges, each ``(first id, result)`` with
    ids local to its range: exact, since the global top-k of each direction is within the
    union of the ranges' top-k. Ties go to the lower id (as in one scan over all rows)."""

    def pick(
        ids: list[npt.NDArray[np.int64]], scores: list[npt.NDArray[np.float32]], sign: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        all_i, all_s = np.concatenate(ids, axis=1), np.concatenate(scores, axis=1)
        order = np.lexsort((all_i, -sign * all_s), axis=1)[:, :k]  # by score, then by id
        return np.take_along_axis(all_i, order, 1), np.take_along_axis(all_s, order, 1)

    top_i, top_s = pick(
        [r.proponent_ids + o for o, r in parts], [r.proponent_scores for _, r in parts], 1
    )
    bot_i, bot_s = pick(
        [r.opponent_ids + o for o, r in parts], [r.opponent_scores for _, r in parts], -1
    )
    full = (
        np.concatenate([r.scores for _, r in parts if r.scores is not None], axis=1)
        if all(r.scores is not None for _, r in parts)
        else None
    )
    hists = [r.histogram for _, r in parts]
    histogram = (
        sum(h for h in hists if h is not None) if all(h is not None for h in hists) else None
    )
    return ScoreResult(
        top_i,
        top_s,
        bot_i,
        bot_s,
        full,
        parts[0][1].residual,
        histogram,  # type: ignore[arg-type]
    )
