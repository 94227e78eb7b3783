"""What every build starts from: its output checked, the model and featurizer, and the
manifest that records them (docs/index-format.md, *Manifest*)."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .. import __version__
from ..config import BuildConfig
from ..engine.layout import FactorLayout
from ..engine.projection import Projections
from ..errors import ConfigError
from ..models.featurizer import Featurizer
from ..models.loading import load_causal_lm, model_fingerprint, resolve_device
from ..models.registry import canonical
from ..models.tasks import CausalLMTask
from ..storage.manifest import BUILDING, MANIFEST, LayerRecord, Manifest, TaskRecord

log = logging.getLogger("lorif")


def software_versions() -> dict[str, str]:
    import transformers

    return {
        "lorif": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def make_manifest(
    cfg: BuildConfig,
    featurizer: Featurizer,
    n: int,
    model_info: dict[str, Any],
    task_info: dict[str, Any],
    ranks: tuple[int, ...] | None = None,
) -> Manifest:
    """The manifest a build of ``n`` examples starts with (the curvature comes at the end);
    ``ranks``: c per layer (``build.budget.layer_ranks``; None: ``--rank`` for every one)."""
    sums = featurizer.checksums()
    layout = FactorLayout(tuple(featurizer.layers), ranks or (cfg.rank,) * len(featurizer.layers))
    per_layer = bool(cfg.bytes_per_example) or not layout.is_uniform
    layers = [
        LayerRecord(
            t.name,
            t.in_dim,
            t.out_dim,
            t.d1,
            t.d2,
            sums[t.name][0],
            sums[t.name][1],
            offset,
            c if per_layer else None,
        )
        for t, offset, c in zip(layout.layers, layout.offsets, layout.ranks, strict=True)
    ]
    return Manifest(
        n_examples=n,
        rank=layout.max_rank,
        storage_dtype=cfg.dtype,
        row_width=layout.width,
        layers=layers,
        projection={"generator": "splitmix64-rademacher-v1", "seed": cfg.seed},
        model=model_info,
        task=TaskRecord.from_dict(task_info, "task"),
        build_config=cfg.content_dict(),
        software=software_versions(),
        shard_size=cfg.shard_size or None,
    )


def check_output(cfg: BuildConfig) -> Path:
    """The output path, refused in one line when it exists (and is not a build to resume)."""
    out = Path(cfg.output)
    resuming = cfg.shard_size and (out / BUILDING).exists() and not (out / MANIFEST).exists()
    if out.exists() and not cfg.overwrite and not resuming:
        raise ConfigError(f"{out} already exists (pass --overwrite to replace it)")
    if not out.parent.exists():
        raise ConfigError(f"output directory does not exist: {out.parent}")
    return out


def language_model(cfg: BuildConfig) -> tuple[Featurizer, dict[str, Any], dict[str, Any]]:
    """The featurizer of a causal LM named by ``cfg.model``, and what the manifest records."""
    device = resolve_device(cfg.device)
    loaded = load_causal_lm(cfg.model, device)
    max_tokens = clamp_to_context(cfg.max_tokens, loaded.model)
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


def clamp_to_context(max_tokens: int, model: torch.nn.Module) -> int:
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


def check_rank(cfg: BuildConfig, featurizer: Featurizer) -> None:
    if cfg.bytes_per_example:  # the budget's choice stays within each layer's min(d1, d2)
        return
    too_big = [t for t in featurizer.layers if cfg.rank > min(t.d1, t.d2)]
    if too_big:
        t = too_big[0]
        raise ConfigError(
            f"rank c={cfg.rank} exceeds min(d1, d2)={min(t.d1, t.d2)} of layer "
            f"{t.name} ({len(too_big)} layer(s) affected)"
        )


def projections_to_store(cfg: BuildConfig, featurizer: Featurizer) -> Projections | None:
    """The projection matrices when they total at most ``store_projections_mb``."""
    stored = featurizer.projections
    size_mb = sum(a.nbytes + b.nbytes for a, b in stored.values()) / 2**20
    return stored if size_mb <= cfg.store_projections_mb else None


def resume_differences(old: Manifest, new: Manifest, cfg: BuildConfig) -> list[str]:
    """What differs between the build an interrupted run began (``old``) and this one."""
    same = ("n_examples", "model", "layers", "software", "shard_size")
    return old.config_differences(cfg.content_dict()) + old.differences(new, same)
