"""Checking a query before it is scored: its tokens under the index's own task (tokenizer,
``max_tokens``, chat template). Needs only the tokenizer, so a front end that hands scoring to
another process (the service's scorer process) can refuse a bad query without the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data import Example, query_example
from ..errors import DataError, IndexFormatError, QueryTooLongError
from ..models.loading import load_tokenizer
from ..models.tasks import CausalLMTask, Task
from ..storage.reader import Index


def require_lm_index(index: Index) -> None:
    """IndexFormatError unless ``index`` was built for a causal LM (the CLI and service kind)."""
    if index.manifest.task.kind != "causal_lm":
        raise IndexFormatError(f"{index.path}: not a language-model index; use the Python API")


def lm_task(index: Index, tokenizer: Any) -> CausalLMTask:
    """The task an LM index was built with (its max_tokens and chat template)."""
    require_lm_index(index)
    t = index.manifest.task
    return CausalLMTask(tokenizer, int(t.max_tokens or 0), bool(t.chat_template))


def model_spec(index: Index, model: str | None = None) -> str:
    """The model to load for ``index``: ``model`` if given, else the one it was built with."""
    return model or index.manifest.model_spec


@dataclass
class QueryChecker:
    task: Task

    @classmethod
    def for_index(cls, index: Index, model: str | None = None) -> QueryChecker:
        """The checker of an LM index, loading only its model's tokenizer."""
        require_lm_index(index)
        return cls(lm_task(index, load_tokenizer(model_spec(index, model))))

    def query_tokens(self, query: Example) -> int:
        """Token count of a query; raises DataError when no token counts in its loss."""
        task = self.task
        if not isinstance(task, CausalLMTask):
            return task.length(query)
        ids, mask = task.encode(query)
        if sum(mask[1:]) == 0:
            raise DataError(
                "the query has no tokens whose loss counts (empty completion, or a one-token text)"
            )
        return len(ids)

    def checked_query(
        self, prompt: str, completion: str | None = None, max_tokens: int | None = None
    ) -> tuple[Example, int]:
        """A query from text (see ``query_example``) and its token count (``check_query``)."""
        q = query_example(prompt, completion)
        return q, self.check_query(q, max_tokens)

    def check_query(self, query: Example, max_tokens: int | None = None) -> int:
        """The query's token count. Raises DataError when no token counts in its loss and
        QueryTooLongError when it has more tokens than ``max_tokens`` or the index's own limit:
        a query is never silently truncated."""
        n_tokens = self.query_tokens(query)
        task = self.task
        if isinstance(task, CausalLMTask):
            full = task.full_length(query)
            limit = min(max_tokens or task.max_tokens, task.max_tokens)
            if full > limit:
                raise QueryTooLongError(
                    f"the query has {full} tokens; at most {limit} are accepted"
                )
        return n_tokens
