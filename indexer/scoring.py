"""Reference scorer: precondition queries once per layer, stream factor blocks, keep top-k.

For query gradients G~_q (Q, d1, d2) per layer:
    z = V^T vec(G~_q);  P_q = (1/lam) [G~_q - mat(V diag(sigma2/(sigma2+lam)) z)]
and for every stored example i:  s(q, i) = sum_layers sum_c l_{i,c}^T P_q r_{i,c}.
Positive = the example lowers the query's loss (proponent); negative = opponent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .index_file import Curvature
from .store import FactorLayout, FactorStore, decode
from .streaming import iter_blocks


@dataclass
class LayerPreconditioner:
    """(V Sigma^2 V^T + lam I)^{-1} of one layer, applied in O(D r)."""

    V: torch.Tensor  # (D, r)
    coef: torch.Tensor  # (r,) sigma2 / (sigma2 + lam)
    lam: float

    @classmethod
    def from_curvature(cls, c: Curvature, device: torch.device | str = "cpu"
                       ) -> "LayerPreconditioner":
        sigma2 = torch.as_tensor(c.sigma2, dtype=torch.float64)
        coef = (sigma2 / (sigma2 + c.lam)).float()
        return cls(torch.as_tensor(c.V, dtype=torch.float32).to(device), coef.to(device), c.lam)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """g (Q, d1, d2) -> P (Q, d1, d2)."""
        flat = g.reshape(g.shape[0], -1)
        if self.V.shape[1]:
            flat = flat - ((flat @ self.V) * self.coef) @ self.V.T
        return (flat / self.lam).reshape(g.shape)


def precondition(grads: dict[str, torch.Tensor], pre: dict[str, LayerPreconditioner]
                 ) -> dict[str, torch.Tensor]:
    return {name: pre[name].apply(g.float()) for name, g in grads.items()}


def score_rows(layout: FactorLayout, rows: torch.Tensor, p: dict[str, torch.Tensor]
               ) -> torch.Tensor:
    """rows (B, width) float32 -> scores (Q, B), summed over layers. One GEMM per layer."""
    total = None
    for i, t in enumerate(layout.layers):
        left, right = layout.unpack(rows, i)  # (B, c, d1), (B, c, d2)
        pq = p[t.name]  # (Q, d1, d2)
        nq, b, c = pq.shape[0], rows.shape[0], layout.rank
        pr = (pq.reshape(nq * t.d1, t.d2) @ right.reshape(b * c, t.d2).T)  # (Q*d1, B*c)
        s = (pr.reshape(nq, t.d1, b, c) * left.permute(2, 0, 1)).sum(dim=(1, 3))  # (Q, B)
        total = s if total is None else total + s
    assert total is not None
    return total


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

    def _merge(self, s0, i0, s1, i1, largest: bool):
        s, i = torch.cat([s0, s1], dim=1), torch.cat([i0, i1], dim=1)
        vals, pos = torch.topk(s, min(self.k, s.shape[1]), dim=1, largest=largest, sorted=True)
        return vals, torch.gather(i, 1, pos)


@dataclass
class LowRankQueries:
    """P_q ~= A_q B_q^T per layer, truncated to rank ``rank`` by SVD (method.md section 4).

    left[name] (Q, d1, rank) = U S and right[name] (Q, d2, rank) = V; ``residual`` (Q,) is
    ||P - A B^T||_F / ||P||_F over all layers, the part of the query the fast path drops.
    """

    left: dict[str, torch.Tensor]
    right: dict[str, torch.Tensor]
    residual: np.ndarray
    rank: int

    @classmethod
    def factor(cls, p: dict[str, torch.Tensor], rank: int) -> "LowRankQueries":
        left, right, kept, total = {}, {}, 0.0, 0.0
        for name, pq in p.items():
            u, s, vh = torch.linalg.svd(pq, full_matrices=False)  # (Q,d1,m) (Q,m) (Q,m,d2)
            r = min(rank, s.shape[1])
            left[name] = u[:, :, :r] * s[:, None, :r]
            right[name] = vh[:, :r, :].transpose(1, 2)
            kept = kept + (s[:, :r] ** 2).sum(1).double()
            total = total + (s ** 2).sum(1).double()
        resid = torch.sqrt(torch.clamp(1 - kept / torch.clamp(total, min=1e-300), min=0))
        return cls(left, right, resid.cpu().numpy(), rank)


def score_rows_lowrank(layout: FactorLayout, rows: torch.Tensor, lr: LowRankQueries
                       ) -> torch.Tensor:
    """rows (B, width) -> approximate scores (Q, B): sum_c (A^T l_ic) . (B^T r_ic).

    Costs 2 c rank (d1 + d2) multiply-adds per example, query and layer instead of c d1 d2.
    """
    total = None
    for i, t in enumerate(layout.layers):
        left, right = layout.unpack(rows, i)  # (B, c, d1), (B, c, d2)
        a, b = lr.left[t.name], lr.right[t.name]  # (Q, d1, k), (Q, d2, k)
        nq, k = a.shape[0], a.shape[2]
        nb, c = rows.shape[0], layout.rank
        la = left.reshape(nb * c, t.d1) @ a.permute(1, 0, 2).reshape(t.d1, nq * k)
        rb = right.reshape(nb * c, t.d2) @ b.permute(1, 0, 2).reshape(t.d2, nq * k)
        s = (la * rb).reshape(nb, c, nq, k).sum(dim=(1, 3)).T  # (Q, B)
        total = s if total is None else total + s
    assert total is not None
    return total


@dataclass
class ScoreResult:
    proponent_ids: np.ndarray  # (Q, k) highest scores first
    proponent_scores: np.ndarray
    opponent_ids: np.ndarray  # (Q, k) lowest scores first
    opponent_scores: np.ndarray
    scores: np.ndarray | None  # (Q, N) every example's score, when requested
    residual: np.ndarray | None = None  # (Q,) low-rank path: the dropped part of each query


def score_store(store: FactorStore, p: dict[str, torch.Tensor], k: int = 10,
                block_rows: int = 4096, keep_scores: bool = True,
                device: torch.device | str = "cpu", query_rank: int = 0,
                candidates: int = 4) -> ScoreResult:
    """Stream the store in blocks and score preconditioned queries ``p`` against every row.

    ``query_rank`` = 0: the exact path. ``query_rank`` > 0: the scan uses rank-``query_rank``
    queries and keeps ``candidates * k`` candidates per query and direction; those rows are
    then scored exactly, so returned scores are exact and only the candidate recall is
    approximate (``scores``, when kept, are the approximate ones).
    """
    n_queries = next(iter(p.values())).shape[0]
    lowrank = LowRankQueries.factor(p, query_rank) if query_rank > 0 else None
    width = k * candidates if lowrank else k
    top = RunningTopK(n_queries, width, device)
    full = np.empty((n_queries, len(store)), dtype=np.float32) if keep_scores else None
    for start, rows in iter_blocks(store, block_rows, device):
        s = (score_rows_lowrank(store.layout, rows, lowrank) if lowrank
             else score_rows(store.layout, rows, p))
        top.update(s, start)
        if full is not None:
            full[:, start : start + s.shape[1]] = s.cpu().numpy()
    if lowrank:
        top = _rescore(store, p, top, k, device)
    return ScoreResult(top.top_i.cpu().numpy(), top.top_s.cpu().numpy(),
                       top.bot_i.cpu().numpy(), top.bot_s.cpu().numpy(), full,
                       lowrank.residual if lowrank else None)


def _rescore(store: FactorStore, p: dict[str, torch.Tensor], cand: RunningTopK, k: int,
             device: torch.device | str) -> RunningTopK:
    """Exact scores of each query's candidates; the top-k of those."""
    ids = torch.cat([cand.top_i, cand.bot_i], dim=1)  # (Q, 2m)
    union = torch.unique(ids)  # sorted
    rows = decode(store.take(union.cpu().numpy()), store.dtype, device)
    exact = score_rows(store.layout, rows, p)  # (Q, U)
    pos = torch.searchsorted(union, ids)
    s = torch.gather(exact, 1, pos)
    out = RunningTopK(ids.shape[0], k, device)
    m = cand.top_i.shape[1]
    out.top_s, out.top_i = out._merge(s[:, :0], ids[:, :0], s[:, :m], ids[:, :m], largest=True)
    out.bot_s, out.bot_i = out._merge(s[:, :0], ids[:, :0], s[:, m:], ids[:, m:], largest=False)
    return out
