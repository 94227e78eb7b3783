"""Token-level explanations: one (query, training example) score split exactly over positions.

Per layer the projected gradient is a sum over positions, G~ = sum_t a_t b_t^T with
a_t = P_in^T x_t (d1) and b_t = P_out^T delta_t (d2). The index stores the rank-c truncation
G~_c = U_c U_c^T G~ (U_c: top-c left singular vectors of G~), hence

    s(q, i) = sum_l <P_q, G~_i,c> = sum_t sum_l a_{i,t}^T U_c U_c^T P_q b_{i,t}   (example positions)
            = sum_u sum_l a_{q,u}^T M_i b_{q,u},  M_i = (V S^2 V^T + lam I)^-1 G~_i,c  (query positions)

Both splits are exact. The example's gradient is recomputed in full precision, so ``score``
differs from the scan's score (bf16/fp16 factors, ``index_score``) by the storage rounding only.
A position's contribution belongs to its token's activations and the gradient that reaches them
from the predictions after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Example
from .errors import ConfigError, DataError
from .query import QueryEngine
from .scoring import score_rows
from .store import decode
from .tasks import CausalLMTask


@dataclass
class TokenContribution:
    text: str  # the token as the tokenizer decodes it alone
    contribution: float
    target: bool  # this token is a prediction target counted in the loss


@dataclass
class Explanation:
    example_id: int
    score: float  # = sum of either list of contributions
    index_score: float  # the scan's score of this pair (stored factors)
    query_tokens: list[TokenContribution]
    example_tokens: list[TokenContribution]
    example_truncated: bool  # the example is longer than the index's max_tokens


def _tokens(task: CausalLMTask, example: Example, values: torch.Tensor
            ) -> list[TokenContribution]:
    ids, mask = task.encode(example)
    if len(ids) != values.shape[0]:
        raise DataError("token count and captured positions differ (a tracked layer runs more "
                        "than once per forward pass); explanations need one call per layer")
    return [TokenContribution(task.tokenizer.decode([i]), float(v), bool(m))
            for i, v, m in zip(ids, values.tolist(), mask)]


def explain(engine: QueryEngine, query: Example, example_id: int) -> Explanation:
    """Split the score of training example ``example_id`` for ``query`` over both texts' tokens."""
    task = engine.featurizer.task
    if not isinstance(task, CausalLMTask):
        raise ConfigError("token explanations need a language-model index")
    n = len(engine.index)
    if not 0 <= example_id < n:
        raise DataError(f"example_id must be in [0, {n})")
    engine.query_tokens(query)  # raises DataError for a query without loss tokens
    example = engine.index.example(example_id)
    q_terms = engine.featurizer.position_terms(query)
    i_terms = engine.featurizer.position_terms(example)
    c = engine.index.manifest["rank"]
    per_example = per_query = None
    p_q = {}
    for name, pre in engine.preconditioners.items():
        aq, bq = (t.double() for t in q_terms[name])  # (Tq, d1), (Tq, d2)
        ai, bi = (t.double() for t in i_terms[name])  # (Ti, d1), (Ti, d2)
        g_i = ai.T @ bi
        u = torch.linalg.svd(g_i, full_matrices=False)[0][:, :c]  # (d1, c)
        pq = pre.apply((aq.T @ bq)[None])[0]
        p_q[name] = pq.float()[None]
        s_i = ((ai @ u) @ (u.T @ pq) * bi).sum(dim=1)  # (Ti,)
        s_q = ((aq @ pre.apply((u @ (u.T @ g_i))[None])[0]) * bq).sum(dim=1)  # (Tq,)
        per_example = s_i if per_example is None else per_example + s_i
        per_query = s_q if per_query is None else per_query + s_q
    assert per_example is not None and per_query is not None
    store = engine.index.store()
    row = decode(store.read(example_id, example_id + 1), store.dtype, engine.featurizer.device)
    index_score = float(score_rows(store.layout, row, p_q)[0, 0])
    return Explanation(
        example_id=example_id, score=float(per_example.sum()), index_score=index_score,
        query_tokens=_tokens(task, query, per_query.cpu()),
        example_tokens=_tokens(task, example, per_example.cpu()),
        example_truncated=task.full_length(example) > task.max_tokens)
