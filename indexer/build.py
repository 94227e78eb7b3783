"""Build an index: featurize every example, factorize, store, then compute the curvature basis.

data -> models (featurizer) -> engine (factorize) -> storage (writer: partial file, done mask)
-> engine (curvature, streamed over the written rows) -> storage (publish: basis, fingerprint,
atomic rename).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from .build_steps import curvature_over, featurize_rows
from .config import BuildConfig
from .data import Example, load_examples
from .engine.preconditioners import Curvature
from .engine.projection import Projections
from .errors import ConfigError, IndexFormatError, ResumeMismatchError
from .manifest import make_manifest
from .models.featurizer import Featurizer
from .models.loading import load_causal_lm, model_fingerprint, resolve_device
from .models.registry import canonical
from .models.tasks import CausalLMTask
from .storage.format import partial_path
from .storage.shard_builds import sharded_writer
from .storage.shards import BUILDING, MANIFEST, ShardedWriter
from .storage.writer import IndexWriter, build_lock
from .threads import use_threads
from .verbatim import publish_verbatim

log = logging.getLogger("lorif")


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
    cfg.validate()
    if featurizer is None and not cfg.model:
        raise ConfigError("--model is required")
    if examples is None and not cfg.data:
        raise ConfigError("--data is required")
    from .distributed import build_distributed, ranks_from_env

    ranks = ranks_from_env()
    if ranks is not None and featurizer is None and examples is None:
        return build_distributed(cfg, ranks, progress)
    out = _check_output(cfg)
    use_threads(cfg.threads)
    with build_lock(out):
        started = time.perf_counter()
        if examples is None:
            examples = load_examples(cfg.data, cfg.limit)
        if featurizer is None:
            featurizer, model_info, task_info = _language_model(cfg)
        _check_rank(cfg, featurizer)
        lengths = np.array([featurizer.task.length(ex) for ex in examples], dtype=np.int64)
        manifest = make_manifest(cfg, featurizer, len(examples), model_info or {}, task_info or {})
        writer: IndexWriter | ShardedWriter = (
            sharded_writer(cfg, manifest, examples, lengths, _projections_to_store(cfg, featurizer))
            if cfg.shard_size
            else _resume_or_create(cfg, manifest, examples, lengths, featurizer)
        )
        return _fill_and_publish(
            cfg, writer, featurizer, examples, lengths, manifest, started, progress
        )


def _fill_and_publish(
    cfg: BuildConfig,
    writer: IndexWriter | ShardedWriter,
    featurizer: Featurizer,
    examples: list[Example],
    lengths: npt.NDArray[np.int64],
    manifest: dict[str, Any],
    started: float,
    progress: bool,
) -> Path:
    """Featurize the writer's pending rows, compute the curvature over all its rows, publish."""
    info: dict[str, Any] = {"load_seconds": round(time.perf_counter() - started, 3)}
    info.update(featurize_rows(cfg, writer, featurizer, examples, lengths, progress))
    t1 = time.perf_counter()
    moments = writer.moments if isinstance(writer, ShardedWriter) else None
    curvature = curvature_over(cfg, writer.store(), featurizer.device, progress, None, moments)
    build_info(cfg, manifest, curvature, writer.n, info, started, t1, lengths, featurizer.device)
    writer.publish(manifest, curvature, torch.get_num_threads())
    publish_verbatim(cfg.output)
    return Path(cfg.output)


def build_info(
    cfg: BuildConfig,
    manifest: dict[str, Any],
    curvature: Mapping[str, Curvature],
    rows: int,
    info: dict[str, Any],
    started: float,
    curvature_started: float,
    lengths: npt.NDArray[np.int64],
    device: torch.device,
) -> None:
    """Record the curvature settings (``rows``: the rows the basis is computed over) and the
    build's figures in ``manifest``."""
    manifest["curvature"] = {
        "kind": cfg.curvature.kind,
        "rank": cfg.curvature.rank,
        "oversample": cfg.curvature.oversample,
        "power_iters": cfg.curvature.power_iters,
        "damping": cfg.curvature.damping,
        "damping_abs": cfg.curvature.damping_abs,
        "lambda": {n: c.lam for n, c in curvature.items()},
        "rows": rows,
    }
    manifest["build_info"] = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **info,
        "curvature_seconds": round(time.perf_counter() - curvature_started, 3),
        "total_seconds_this_run": round(time.perf_counter() - started, 3),
        "total_tokens": int(lengths.sum()),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "output": str(cfg.output),
    }


def _check_output(cfg: BuildConfig) -> Path:
    out = Path(cfg.output)
    resuming = cfg.shard_size and (out / BUILDING).exists() and not (out / MANIFEST).exists()
    if out.exists() and not cfg.overwrite and not resuming:
        raise ConfigError(f"{out} already exists (pass --overwrite to replace it)")
    if not out.parent.exists():
        raise ConfigError(f"output directory does not exist: {out.parent}")
    return out


def _language_model(cfg: BuildConfig) -> tuple[Featurizer, dict[str, Any], dict[str, Any]]:
    """The featurizer of a causal LM named by ``cfg.model``, and what the manifest records."""
    device = resolve_device(cfg.device)
    loaded = load_causal_lm(cfg.model, device)
    max_tokens = _clamp_to_context(cfg.max_tokens, loaded.model)
    task = CausalLMTask(loaded.tokenizer, max_tokens, cfg.chat_template)
    featurizer = Featurizer.create(
        loaded.model,
        task,
        layer_globs=cfg.layer_globs,
        proj_factor=cfg.proj_factor,
        d1=cfg.d1,
        d2=cfg.d2,
        seed=cfg.seed,
        device=device,
    )
    featurizer.autocast = torch.bfloat16 if cfg.autocast == "bf16" else None
    model_info = {
        "spec": cfg.model,
        "path": cfg.model if canonical(cfg.model) else str(Path(cfg.model).resolve()),
        "directory": loaded.directory,
        "gguf_file": loaded.gguf_file,
        "class": type(loaded.model).__name__,
        "fingerprint": model_fingerprint(loaded.model),
    }
    task_info = {
        "kind": "causal_lm",
        "max_tokens": max_tokens,
        "chat_template": cfg.chat_template,
    }
    return featurizer, model_info, task_info


def _clamp_to_context(max_tokens: int, model: torch.nn.Module) -> int:
    """``max_tokens``, or the model's context length when that is shorter (said on stderr)."""
    config = getattr(model, "config", None)
    context = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    if isinstance(context, int) and 0 < context < max_tokens:
        log.warning(
            "--max-tokens %d is longer than the model's context of %d tokens: "
            "examples are truncated to %d",
            max_tokens,
            context,
            context,
        )
        return context
    return max_tokens


def _check_rank(cfg: BuildConfig, featurizer: Featurizer) -> None:
    too_big = [t for t in featurizer.layers if cfg.rank > min(t.d1, t.d2)]
    if too_big:
        t = too_big[0]
        raise ConfigError(
            f"rank c={cfg.rank} exceeds min(d1, d2)={min(t.d1, t.d2)} of layer "
            f"{t.name} ({len(too_big)} layer(s) affected)"
        )


def _resume_or_create(
    cfg: BuildConfig,
    manifest: dict[str, Any],
    examples: list[Example],
    n_tokens: npt.NDArray[np.int64],
    featurizer: Featurizer,
) -> IndexWriter:
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
        old_cfg = old["build_config"]
        diff = sorted(k for k, v in cfg.content_dict().items() if old_cfg.get(k) != v)
        diff += [
            key
            for key in ("n_examples", "model", "layers", "software")
            if old.get(key) != manifest[key]
        ]
        if diff:
            raise ResumeMismatchError(
                f"{partial_path(out)} is a partial build with different settings "
                f"({', '.join(diff)}); rerun with the same settings or pass --overwrite"
            )
        return writer
    return IndexWriter.create(
        out, manifest, examples, n_tokens, _projections_to_store(cfg, featurizer)
    )


def _projections_to_store(cfg: BuildConfig, featurizer: Featurizer) -> Projections | None:
    """The projection matrices when they total at most ``store_projections_mb``."""
    stored = featurizer.projections
    size_mb = sum(a.nbytes + b.nbytes for a, b in stored.values()) / 2**20
    return stored if size_mb <= cfg.store_projections_mb else None
