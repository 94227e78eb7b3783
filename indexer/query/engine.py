"""Query an index with the model it was built from: the reference scorer the service wraps.

A query is featurized by the code that built the index (same projections, checked by
checksum), preconditioned once per layer, and scored against every stored row by streaming the
factor store; ``explain`` splits one (query, example) score over both texts' tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data import Example
from ..engine.normalize import query_norms
from ..engine.scoring import Preconditioner, ScoreResult, precondition, score_store
from ..errors import IndexFormatError
from ..models.featurizer import Featurizer
from ..models.loading import load_causal_lm, model_fingerprint, resolve_device
from ..models.tasks import Task
from ..storage.reader import Index
from ..storage.resident import Resident, ResidentFactorStore, make_resident
from ..storage.store import FactorStore
from .checker import QueryChecker, lm_task, model_spec, require_lm_index
from .explanation import Explanation, explain
from .options import Normalize, QueryOptions
from .preconditioning import Preconditioning

if TYPE_CHECKING:
    from .answer import Answer


@dataclass
class QueryEngine:
    index: Index
    featurizer: Featurizer
    preconditioning: Preconditioning
    store: FactorStore  # memory-mapped (streamed) or resident in device memory

    @classmethod
    def attach(
        cls,
        index: Index,
        model: torch.nn.Module,
        task: Task,
        device: torch.device | str = "cpu",
        resident: Resident = "auto",
    ) -> QueryEngine:
        """Bind an open index to an in-memory model (projections verified by checksum).
        ``resident``: keep the factor rows in device memory (see storage/resident.py)."""
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        featurizer = Featurizer.from_layers(
            model,
            task,
            list(index.layout.layers),
            seed=index.manifest.projection_seed,
            device=dev,
            projections=index.stored_projections(),
        )
        featurizer.verify_checksums(index.manifest.checksums)
        pre = Preconditioning.load(index, dev)
        return cls(index, featurizer, pre, make_resident(index.store(), dev, resident))

    @classmethod
    def open(
        cls,
        path: str | Path | Index,
        model: str | None = None,
        device: str = "auto",
        check_model: bool = True,
        resident: Resident = "auto",
    ) -> QueryEngine:
        """Open an LM index (a path, or an Index already open, which the engine then owns) and
        load its model (or ``model``, which must have the same weights)."""
        index = path if isinstance(path, Index) else Index(path)
        try:
            require_lm_index(index)  # before the model loads
            dev = resolve_device(device)
            loaded = load_causal_lm(cls.model_spec(index, model), dev)
            recorded = index.manifest.model_fingerprint
            if check_model and model_fingerprint(loaded.model) != recorded:
                raise IndexFormatError(
                    "the model's weights differ from those the index was built with"
                )
            return cls.attach(index, loaded.model, lm_task(index, loaded.tokenizer), dev, resident)
        except Exception:
            index.close()
            raise

    @staticmethod
    def model_spec(index: Index, model: str | None = None) -> str:
        """The model to load for ``index``: ``model`` if given, else the one it was built with."""
        return model_spec(index, model)

    @property
    def device(self) -> torch.device:
        return self.featurizer.device

    @property
    def resident(self) -> bool:
        """The factor rows are held in device memory (not streamed from the file)."""
        return isinstance(self.store, ResidentFactorStore)

    @property
    def checker(self) -> QueryChecker:
        """Query checks under this engine's task (token counts, limits)."""
        return QueryChecker(self.featurizer.task)

    def query_tokens(self, query: Example) -> int:
        """Token count of a query; raises DataError when no token counts in its loss."""
        return self.checker.query_tokens(query)

    def checked_query(
        self, prompt: str, completion: str | None = None, max_tokens: int | None = None
    ) -> tuple[Example, int]:
        """A query from text and its token count (see ``QueryChecker.checked_query``)."""
        return self.checker.checked_query(prompt, completion, max_tokens)

    def check_query(self, query: Example, max_tokens: int | None = None) -> int:
        """The query's token count, or DataError / QueryTooLongError (``QueryChecker``)."""
        return self.checker.check_query(query, max_tokens)

    def query_gradients(self, queries: list[Example]) -> dict[str, torch.Tensor]:
        for q in queries:
            self.query_tokens(q)
        return self.featurizer.gradients(queries)

    def preconditioned(
        self, queries: list[Example], damping: float | None = None
    ) -> dict[str, torch.Tensor]:
        """P_q (Q, d1, d2) per layer: the query gradients through the Woodbury inverse;
        ``damping``: alpha for this call instead of the build's (see ``preconditioners_for``)."""
        return precondition(self.query_gradients(queries), self.preconditioners_for(damping))

    def options_for(self, options: QueryOptions) -> QueryOptions:
        """``options`` canonical for this index (QueryOptions.for_index)."""
        return options.for_index(self.index.curvature_record)

    def preconditioned_each(
        self, queries: list[Example], dampings: Sequence[float | None]
    ) -> dict[str, torch.Tensor]:
        """P_q of queries that each have their own canonical damping (``options_for``; None:
        the build's), in order: featurized once, preconditioned per distinct damping."""
        grads = self.query_gradients(queries)
        out = {n: torch.empty_like(g, dtype=torch.float32) for n, g in grads.items()}
        for alpha in dict.fromkeys(dampings):
            rows = torch.tensor([i for i, d in enumerate(dampings) if d == alpha])
            part = precondition(
                {n: g[rows] for n, g in grads.items()}, self.preconditioning.at(alpha)
            )
            for n, p in part.items():
                out[n][rows.to(p.device)] = p
        return out

    def preconditioners_for(self, damping: float | None) -> dict[str, Preconditioner]:
        """The preconditioners at relative damping alpha = ``damping`` (None: the build's;
        checked; see Preconditioning.at)."""
        return self.preconditioning.at(self.preconditioning.canonical(damping))

    def scan(
        self,
        p: dict[str, torch.Tensor],
        k: int | Sequence[int] = 10,
        keep_scores: bool = False,
        block_rows: int = 0,
        query_rank: int = 0,
        candidates: int = 4,
        row_scale: torch.Tensor | None = None,
        totals_by: str | None = None,
    ) -> ScoreResult:
        """Stream the factor store once for preconditioned queries ``p`` (see score_store);
        ``totals_by``: also sum the scores per value of this metadata key."""
        groups = None
        if totals_by is not None:
            codes, values = self.index.meta_table.codes(totals_by)
            groups = (totals_by, torch.from_numpy(codes), values)
        return score_store(
            self.store,
            p,
            k=k,
            block_rows=block_rows,
            keep_scores=keep_scores,
            device=self.device,
            query_rank=query_rank,
            candidates=candidates,
            row_scale=row_scale,
            groups=groups,
        )

    def score(
        self,
        queries: list[Example],
        k: int | Sequence[int] = 10,
        keep_scores: bool = True,
        block_rows: int = 0,
        query_rank: int = 0,
        candidates: int = 4,
        damping: float | None = None,
        normalize: Normalize = "none",
        options: QueryOptions | None = None,
    ) -> ScoreResult:
        """Top-k both ways for each query and, with ``keep_scores``, the full (Q, N) matrix of
        scores. ``options`` (else made from the keywords, and checked): ``query_rank`` > 0 takes
        the low-rank fast path; ``damping``: alpha instead of the build's; ``normalize="unit"``:
        cosines in the preconditioned space (engine/normalize.py). ``k``: one k, or one per
        query."""
        if options is None:
            first = k if isinstance(k, int) else max(k, default=1)
            options = QueryOptions(first, "both", damping, normalize, query_rank, candidates)
        options = self.options_for(options)
        p, scale = self.prepared_for(queries, options)
        ks = options.k if isinstance(k, int) else k
        return self.scan(
            p,
            ks,
            keep_scores,
            block_rows,
            options.query_rank,
            options.candidates,
            scale,
            options.totals_by,
        )

    def prepared(
        self, queries: list[Example], damping: float | None = None, normalize: Normalize = "none"
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """What a scan takes for ``queries`` (see ``prepared_for``; the options checked)."""
        options = self.options_for(QueryOptions(damping=damping, normalize=normalize))
        return self.prepared_for(queries, options)

    def prepared_for(
        self, queries: list[Example], options: QueryOptions
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """What a scan takes for ``queries`` under canonical ``options`` (``options_for``): P_q
        per layer and, with ``normalize="unit"``, P_q / ||H^-1/2 g_q|| and the rows' scale
        1 / ||H^-1/2 g_i|| (N,)."""
        grads = self.query_gradients(queries)
        p = precondition(grads, self.preconditioning.at(options.damping))
        if options.normalize == "none":
            return p, None
        nq = query_norms(grads, p).clamp_min(1e-30)
        p = {n: v / nq[:, None, None].to(v.device) for n, v in p.items()}
        norms = self.preconditioning.norms(self.store, options.damping)
        return p, 1.0 / norms.clamp_min(1e-30)

    def answer(
        self, query: Example, options: QueryOptions | None = None, full_text: bool = False
    ) -> Answer:
        """The query's answer in the API's shape (``answer.py``; ``.to_dict()`` is its JSON)."""
        from .answer import answer_queries  # answer.py builds on this module

        options = self.options_for(options or QueryOptions())
        return answer_queries(self, [query], options, full_text)[0][0]

    def explain(self, query: Example, example_id: int, damping: float | None = None) -> Explanation:
        """Split the score of training example ``example_id`` for ``query`` over both texts'
        tokens (exact; explanation.py); ``damping`` as in ``score``."""
        return explain(self, query, example_id, damping)

    def close(self) -> None:
        self.index.close()
