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
from .store import FactorLayout, FactorStore, iter_blocks


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
class ScoreResult:
    proponent_ids: np.ndarray  # (Q, k) highest scores first
    proponent_scores: np.ndarray
    opponent_ids: np.ndarray  # (Q, k) lowest scores first
    opponent_scores: np.ndarray
    scores: np.ndarray | None  # (Q, N) every example's score, when requested


def score_store(store: FactorStore, p: dict[str, torch.Tensor], k: int = 10,
                block_rows: int = 4096, keep_scores: bool = True,
                device: torch.device | str = "cpu") -> ScoreResult:
    """Stream the store in blocks and score preconditioned queries ``p`` against every row."""
    n_queries = next(iter(p.values())).shape[0]
    top = RunningTopK(n_queries, k, device)
    full = np.empty((n_queries, len(store)), dtype=np.float32) if keep_scores else None
    for start, rows in iter_blocks(store, block_rows, device):
        s = score_rows(store.layout, rows, p)
        top.update(s, start)
        if full is not None:
            full[:, start : start + s.shape[1]] = s.cpu().numpy()
    return ScoreResult(top.top_i.cpu().numpy(), top.top_s.cpu().numpy(),
                       top.bot_i.cpu().numpy(), top.bot_s.cpu().numpy(), full)
