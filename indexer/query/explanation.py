"""One (query, example) score split over both texts' tokens (engine/explain.py does the
arithmetic): what the page's token colours and ``POST /v1/explanations`` show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data import Example
from ..engine.explain import split_score
from ..engine.scoring import score_rows
from ..errors import ConfigError, DataError
from ..models.tasks import CausalLMTask

if TYPE_CHECKING:
    from .engine import QueryEngine


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


def explain(
    engine: QueryEngine, query: Example, example_id: int, damping: float | None = None
) -> Explanation:
    """Split the score of training example ``example_id`` for ``query`` over both texts'
    tokens (exact; see indexer.engine.explain); ``damping`` as in ``score``."""
    task = engine.featurizer.task
    if not isinstance(task, CausalLMTask):
        raise ConfigError("token explanations need a language-model index")
    if not 0 <= example_id < len(engine.index):
        raise DataError(f"example_id must be in [0, {len(engine.index)})")
    engine.query_tokens(query)  # raises DataError for a query without loss tokens
    example = engine.index.example(example_id)
    split = split_score(
        engine.featurizer.position_terms(query),
        engine.featurizer.position_terms(example),
        engine.preconditioners_for(damping),
        engine.index.layout.ranks_by_name,
    )
    row = engine.store.rows(np.array([example_id]), engine.device)
    index_score = float(score_rows(engine.index.layout, row, split.preconditioned)[0, 0])
    return Explanation(
        example_id=example_id,
        score=split.score,
        index_score=index_score,
        query_tokens=_tokens(task, query, split.query.cpu()),
        example_tokens=_tokens(task, example, split.example.cpu()),
        example_truncated=task.full_length(example) > task.max_tokens,
    )


def _tokens(task: CausalLMTask, example: Example, values: torch.Tensor) -> list[TokenContribution]:
    ids, mask = task.encode(example)
    if len(ids) != values.shape[0]:
        raise DataError(
            "token count and captured positions differ (a tracked layer runs more "
            "than once per forward pass); explanations need one call per layer"
        )
    return [
        TokenContribution(task.tokenizer.decode([i]), float(v), bool(m))
        for i, v, m in zip(ids, values.tolist(), mask, strict=True)
    ]
