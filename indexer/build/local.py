"""Build an index in this process: featurize every example, factorize, store, then compute the
curvature basis and publish.

data -> models (featurizer) -> engine (factorize) -> storage (a RowWriter: partial files, done
masks) -> curvature (streamed over the written rows) -> storage (publish: basis, fingerprint,
atomic rename). Under torchrun the same steps run on every rank (``distributed.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import BuildConfig
from ..data import Example, load_examples
from ..errors import ConfigError, IndexFormatError, ResumeMismatchError
from ..models.featurizer import Featurizer
from ..storage.format import partial_path
from ..storage.manifest import Manifest
from ..storage.writer import IndexWriter, build_lock
from ..threads import use_threads
from .budget import layer_ranks
from .distributed import build_distributed, ranks_from_env
from .inputs import (
    check_output,
    check_rank,
    language_model,
    make_manifest,
    projections_to_store,
    resume_differences,
)
from .steps import fill_and_publish
from .writers import sharded_writer


def build_index(
    cfg: BuildConfig,
    *,
    featurizer: Featurizer | None = None,
    examples: list[Example] | None = None,
    model_info: dict[str, Any] | None = None,
    task_info: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Build (or resume) the index described by ``cfg``; returns the published path.

    For language models everything comes from ``cfg``. Any other torch model: pass a
    ``featurizer`` (with its task) and the ``examples``; ``model_info`` is recorded as given.
    """
    ranks = ranks_from_env() if featurizer is None and examples is None else None
    cfg.validate(processes=ranks.world if ranks else 1)
    if featurizer is None and not cfg.model:
        raise ConfigError("--model is required")
    if examples is None and not cfg.data:
        raise ConfigError("--data is required")
    if ranks is not None:
        return build_distributed(cfg, ranks, progress)
    out = check_output(cfg)
    use_threads(cfg.threads)
    with build_lock(out):
        started = time.perf_counter()
        if examples is None:
            examples = load_examples(cfg.data, cfg.limit)
        if featurizer is None:
            featurizer, model_info, task_info = language_model(cfg)
        check_rank(cfg, featurizer)
        lengths = np.array([featurizer.task.length(ex) for ex in examples], dtype=np.int64)
        chosen = layer_ranks(cfg, featurizer, examples)
        manifest = make_manifest(
            cfg, featurizer, len(examples), model_info or {}, task_info or {}, chosen
        )
        projections = projections_to_store(cfg, featurizer)
        writer = (
            sharded_writer(cfg, manifest, examples, lengths, projections)
            if cfg.shard_size
            else _resume_or_create(cfg, manifest, examples, lengths, projections)
        )
        return fill_and_publish(
            cfg, writer, featurizer, examples, lengths, manifest, started, progress
        )


def _resume_or_create(
    cfg: BuildConfig,
    manifest: Manifest,
    examples: list[Example],
    n_tokens: np.ndarray,
    projections: Any,
) -> IndexWriter:
    """The writer of a single-file index: the partial file of an interrupted run with the same
    settings, or a new one."""
    out = Path(cfg.output)
    if partial_path(out).exists() and cfg.overwrite:
        partial_path(out).unlink()
    if partial_path(out).exists():
        try:
            writer, old = IndexWriter.resume(out)
        except IndexFormatError as e:
            raise ResumeMismatchError(
                f"cannot resume: {e}; pass --overwrite to start over"
            ) from None
        diff = resume_differences(old, manifest, cfg)
        if diff:
            raise ResumeMismatchError(
                f"{partial_path(out)} is a partial build with different settings "
                f"({', '.join(diff)}); rerun with the same settings or pass --overwrite"
            )
        return writer
    return IndexWriter.create(out, manifest, examples, n_tokens, projections)
