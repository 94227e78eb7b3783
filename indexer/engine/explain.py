"""Token-level explanations: one (query, training example) score split exactly over positions.

Per layer the projected gradient is a sum over positions, G~ = sum_t a_t b_t^T with
a_t = P_in^T x_t (d1) and b_t = P_out^T delta_t (d2). The index stores the rank-c truncation
G~_c = U_c U_c^T G~ (U_c: top-c left singular vectors of G~), hence

    s(q, i) = sum_l <P_q, G~_i,c>
            = sum_t sum_l a_{i,t}^T U_c U_c^T P_q b_{i,t}               (example positions)
            = sum_u sum_l a_{q,u}^T M_i b_{q,u},  M_i = H^-1 G~_i,c     (query positions)

with H^-1 the layer's preconditioner (low-rank Woodbury or Kronecker, method.md section 3).

Both splits are exact. The example's gradient is recomputed in full precision (float64 here),
so the split's total differs from the scan's score of the stored bf16/fp16 factors by the
storage rounding only. A position's contribution belongs to its token's activations and the
gradient that reaches them from the predictions after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .scoring import Preconditioner

PositionTerms = Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (a (T, d1), b (T, d2))


@dataclass
class PositionSplit:
    """A pair's score split over the positions of each text (both sum to the same score)."""

    example: torch.Tensor  # (T_i,) float64
    query: torch.Tensor  # (T_q,) float64
    preconditioned: dict[str, torch.Tensor]  # P_q (1, d1, d2) float32 per layer

    @property
    def score(self) -> float:
        return float(self.example.sum())


def split_score(
    query: PositionTerms,
    example: PositionTerms,
    preconditioners: Mapping[str, Preconditioner],
    ranks: Mapping[str, int],
) -> PositionSplit:
    """Split s(q, i) over positions, given both texts' per-position terms and the factor rank c
    the index stores for each layer."""
    per_example = per_query = None
    p_q = {}
    for name, pre in preconditioners.items():
        aq, bq = (t.double() for t in query[name])  # (Tq, d1), (Tq, d2)
        ai, bi = (t.double() for t in example[name])  # (Ti, d1), (Ti, d2)
        g_i = ai.T @ bi
        u = torch.linalg.svd(g_i, full_matrices=False)[0][:, : ranks[name]]  # (d1, c)
        pq = pre.apply((aq.T @ bq)[None])[0]
        p_q[name] = pq.float()[None]
        s_i = ((ai @ u) @ (u.T @ pq) * bi).sum(dim=1)  # (Ti,)
        s_q = ((aq @ pre.apply((u @ (u.T @ g_i))[None])[0]) * bq).sum(dim=1)  # (Tq,)
        per_example = s_i if per_example is None else per_example + s_i
        per_query = s_q if per_query is None else per_query + s_q
    if per_example is None or per_query is None:
        raise ValueError("no layers to explain")
    return PositionSplit(per_example, per_query, p_q)
