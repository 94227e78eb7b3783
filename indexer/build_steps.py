"""The two heavy steps of a build, shared by one-process and distributed builds: featurize this
process's pending rows (model -> factors -> writer), and the curvature over its rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm.auto import tqdm

from .config import BuildConfig
from .data import Example
from .engine.curvature import LayerCurvature, compute_curvature, passes
from .engine.factorize import factorize_layers
from .engine.layout import RowSource
from .models.featurizer import Featurizer
from .storage.shards import ShardedWriter
from .storage.writer import BackgroundRows, IndexWriter


def featurize_rows(
    cfg: BuildConfig,
    writer: IndexWriter | ShardedWriter,
    featurizer: Featurizer,
    examples: list[Example],
    lengths: npt.NDArray[np.int64],
    progress: bool,
) -> dict[str, Any]:
    """Compute, factorize and write every pending row; returns build_info figures."""
    # Batches of similar length (less padding); fixed composition so a resume recomputes
    # exactly the batches an interrupted run would have.
    mine, pending = writer.mine(), writer.pending()
    order = np.argsort(lengths, kind="stable")
    order = order[mine[order]]  # this process's rows (all, unless on several processes)
    batches = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
    todo = [b for b in batches if pending[b].any()]
    bar = tqdm(
        total=len(order),
        initial=len(order) - int(pending.sum()),
        unit="ex",
        desc="featurize",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    tokens, t0 = 0, time.perf_counter()
    background = BackgroundRows(writer, cfg.dtype)
    try:
        for rows in todo:
            grads = featurizer.gradients([examples[i] for i in rows])
            factors = factorize_layers(grads, cfg.rank, cfg.factor_method)
            background.submit(rows, writer.layout.pack(factors))
            tokens += int(lengths[rows].sum())
            bar.update(len(rows))
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f}")
    finally:
        background.close()  # every submitted batch is written (and marked done) first
        bar.close()
    return {
        "featurize_seconds_this_run": round(time.perf_counter() - t0, 3),
        "resumed_rows": int(len(order) - sum(len(b) for b in todo)),
    }


def curvature_over(
    cfg: BuildConfig,
    store: RowSource,
    device: torch.device,
    progress: bool,
    combine: Callable[[torch.Tensor], object] | None = None,
) -> dict[str, LayerCurvature]:
    """The basis of ``store``'s rows (``combine``: summed over the processes of a build), with
    a progress bar."""
    with tqdm(
        total=len(store) * passes(cfg.curvature),
        unit="row",
        desc="curvature",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    ) as bar:
        return compute_curvature(
            store, cfg.curvature, device, seed=cfg.seed, progress=bar.update, combine=combine
        )
