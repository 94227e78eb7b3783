"""What an index's manifest records about its build: layout, projections, model, task,
settings and software (docs/index-format.md, *Manifest*)."""

from __future__ import annotations

import dataclasses
import platform
from typing import Any

import h5py
import numpy as np
import torch

from . import __version__
from .config import BuildConfig
from .engine.layout import FactorLayout
from .models.featurizer import Featurizer
from .storage.format import FORMAT_VERSION


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
) -> dict[str, Any]:
    sums = featurizer.checksums()
    layout = FactorLayout(tuple(featurizer.layers), cfg.rank)
    layers = [
        dict(
            dataclasses.asdict(t),
            proj_in_sha256=sums[t.name][0],
            proj_out_sha256=sums[t.name][1],
            offset=offset,
        )
        for t, offset in zip(layout.layers, layout.offsets, strict=True)
    ]
    return {
        "format_version": FORMAT_VERSION,
        "n_examples": n,
        "rank": cfg.rank,
        "storage_dtype": cfg.dtype,
        "row_width": layout.width,
        "layers": layers,
        "projection": {"generator": "splitmix64-rademacher-v1", "seed": cfg.seed},
        "model": model_info,
        "task": task_info,
        "build_config": cfg.content_dict(),
        "software": software_versions(),
    }
