"""Query an index with the model it was built from (the ground truth the service reproduces)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .capture import TrackedLayer
from .data import Example
from .errors import DataError, IndexFormatError
from .featurize import Featurizer, resolve_device
from .index_file import Index
from .models import load_causal_lm, model_fingerprint
from .scoring import LayerPreconditioner, ScoreResult, precondition, score_store
from .tasks import CausalLMTask, Task


@dataclass
class QueryEngine:
    index: Index
    featurizer: Featurizer
    preconditioners: dict[str, LayerPreconditioner]

    @classmethod
    def attach(cls, index: Index, model: torch.nn.Module, task: Task,
               device: torch.device | str = "cpu") -> "QueryEngine":
        """Bind an open index to an in-memory model (projections verified by checksum)."""
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        m = index.manifest
        layers = [TrackedLayer(d["name"], d["in_dim"], d["out_dim"], d["d1"], d["d2"])
                  for d in m["layers"]]
        featurizer = Featurizer.from_layers(model, task, layers, seed=m["projection"]["seed"],
                                            device=dev, projections=index.stored_projections())
        featurizer.verify_checksums({d["name"]: (d["proj_in_sha256"], d["proj_out_sha256"])
                                     for d in m["layers"]})
        pre = {n: LayerPreconditioner.from_curvature(c, dev) for n, c in index.curvature().items()}
        return cls(index, featurizer, pre)

    @classmethod
    def open(cls, path: str, model: str | None = None, device: str = "auto",
             check_model: bool = True) -> "QueryEngine":
        """Open an LM index and load its model (or ``model``, which must have the same weights)."""
        index = Index(path)
        try:
            m = index.manifest
            if m.get("task", {}).get("kind") != "causal_lm":
                raise IndexFormatError(f"{path}: not a language-model index; use the Python API")
            dev = resolve_device(device)
            loaded = load_causal_lm(model or m["model"].get("path") or m["model"]["spec"], dev)
            if check_model and model_fingerprint(loaded.model) != m["model"].get("fingerprint"):
                raise IndexFormatError("the model's weights differ from those the index was "
                                       "built with")
            task = CausalLMTask(loaded.tokenizer, m["task"]["max_tokens"],
                                m["task"]["chat_template"])
            return cls.attach(index, loaded.model, task, dev)
        except Exception:
            index.close()
            raise

    def query_tokens(self, query: Example) -> int:
        """Token count of an LM query; raises DataError when no token counts in its loss."""
        task = self.featurizer.task
        if not isinstance(task, CausalLMTask):
            return task.length(query)
        ids, mask = task.encode(query)
        if sum(mask[1:]) == 0:
            raise DataError("the query has no tokens whose loss counts (empty completion, "
                            "or a one-token text)")
        return len(ids)

    def query_gradients(self, queries: list[Example]) -> dict[str, torch.Tensor]:
        for q in queries:
            self.query_tokens(q)
        return self.featurizer.gradients(queries)

    def preconditioned(self, queries: list[Example]) -> dict[str, torch.Tensor]:
        """P_q (Q, d1, d2) per layer: the query gradients through the Woodbury inverse."""
        return precondition(self.query_gradients(queries), self.preconditioners)

    def score(self, queries: list[Example], k: int = 10, keep_scores: bool = True,
              block_rows: int = 4096, query_rank: int = 0, candidates: int = 4) -> ScoreResult:
        """Top-k both ways for each query; ``query_rank`` > 0 takes the low-rank fast path."""
        p = self.preconditioned(queries)
        return score_store(self.index.store(), p, k=k, block_rows=block_rows,
                           keep_scores=keep_scores, device=self.featurizer.device,
                           query_rank=query_rank, candidates=candidates)

    def close(self) -> None:
        self.index.close()


def top_rows(result: ScoreResult, q: int, direction: str = "proponents") -> list[tuple[int, float]]:
    ids, scores = ((result.proponent_ids, result.proponent_scores) if direction == "proponents"
                   else (result.opponent_ids, result.opponent_scores))
    return [(int(i), float(s)) for i, s in zip(ids[q], scores[q]) if np.isfinite(s)]
