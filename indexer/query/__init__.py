"""Querying an index: ``QueryEngine`` (engine.py) featurizes queries with the model the index
was built from, preconditions them (preconditioning.py) and scans the factor store;
``QueryOptions`` (options.py) is how a query is answered, checked once; ``QueryChecker``
(checker.py) checks a query's tokens with the tokenizer alone."""

from __future__ import annotations

from .answer import top_rows
from .checker import QueryChecker
from .engine import QueryEngine
from .explanation import Explanation, TokenContribution
from .options import Direction, Normalize, QueryOptions

__all__ = [
    "Direction",
    "Explanation",
    "Normalize",
    "QueryChecker",
    "QueryEngine",
    "QueryOptions",
    "TokenContribution",
    "top_rows",
]
