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
from .engine.curvature import compute_curvature, passes
from .engine.factorize import factorize_layers
from .engine.kronecker import KroneckerMoments, compute_kronecker
from .engine.layout import RowSource
from .engine.preconditioners import Curvature
from .errors import ConfigError
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
    """Compute, factorize and write every pending row; returns build_info figures. A Kronecker
    build (``--curvature kfac | ekfac``) also sums each shard's K-FAC moments and finishes the
    shard with them as soon as its rows are written; an unfinished shard is recomputed whole,
    so its moments always cover exactly its rows."""
    plan = _plan(cfg, writer, lengths)
    mine = writer.mine()
    total = int(mine.sum())
    todo_rows = sum(len(b) for _, batches in plan for b in batches)
    todo_tokens = sum(int(lengths[b].sum()) for _, batches in plan for b in batches)
    # Progress in tokens, known up front (the cost of a batch follows its tokens more than its
    # examples).
    all_tokens = int(lengths[mine].sum())
    bar = tqdm(
        total=all_tokens,
        initial=all_tokens - todo_tokens,
        unit="tok",
        unit_scale=True,
        desc="featurize",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
        smoothing=0.05,
    )
    done_rows, t0 = total - todo_rows, time.perf_counter()
    background = BackgroundRows(writer, cfg.dtype)
    try:
        for shard, batches in plan:
            moments = KroneckerMoments() if shard is not None else None
            for rows in batches:
                grads = featurizer.gradients([examples[i] for i in rows], moments=moments)
                factors = factorize_layers(grads, cfg.rank, cfg.factor_method)
                background.submit(rows, writer.layout.pack(factors))
                done_rows += len(rows)
                bar.set_postfix_str(f"{done_rows}/{total} examples", refresh=False)
                bar.update(int(lengths[rows].sum()))
            if shard is not None and isinstance(writer, ShardedWriter):
                background.wait()
                writer.finish(shard, moments, torch.get_num_threads())
    finally:
        background.close()  # every submitted batch is written (and marked done) first
        bar.close()
    return {
        "featurize_seconds_this_run": round(time.perf_counter() - t0, 3),
        "resumed_rows": total - todo_rows,
    }


Batches = list[npt.NDArray[np.int64]]


def _plan(
    cfg: BuildConfig, writer: IndexWriter | ShardedWriter, lengths: npt.NDArray[np.int64]
) -> list[tuple[int | None, Batches]]:
    """The batches still to run: (None, batches over every pending row) or, for a Kronecker
    build, (shard, its batches) per unfinished shard. Batches hold rows of similar length (less
    padding) in a fixed composition and order, so a resume recomputes what an interrupted run
    would."""

    def batches(rows: npt.NDArray[np.int64]) -> Batches:
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        out = [rows[s : s + cfg.batch_size] for s in range(0, len(rows), cfg.batch_size)]
        # Run them in a seeded shuffled order: the cost per token is then the same early and
        # late, so the progress bar's remaining time holds (in length order it was 2-20x off).
        order = np.random.default_rng(cfg.seed).permutation(len(out))
        return [out[i] for i in order]

    if cfg.curvature.kind == "lowrank":
        pending = writer.pending()
        every = batches(np.flatnonzero(writer.mine()))  # this process's rows
        return [(None, [b for b in every if pending[b].any()])]
    if not isinstance(writer, ShardedWriter):
        raise ConfigError(f"--curvature {cfg.curvature.kind} needs --shard-size N")
    return [(j, batches(rows)) for j, rows in writer.spans().items() if j not in writer.finished]


def curvature_over(
    cfg: BuildConfig,
    store: RowSource,
    device: torch.device,
    progress: bool,
    combine: Callable[[torch.Tensor], object] | None = None,
    moments: Callable[[], KroneckerMoments] | None = None,
) -> dict[str, Curvature]:
    """The curvature of ``store``'s rows (``combine``: summed over the processes of a build;
    ``moments``: the K-FAC moments of those rows, for a Kronecker build), with a progress bar."""
    kind = cfg.curvature.kind
    total = {"lowrank": passes(cfg.curvature), "ekfac": 1}.get(kind, 0) * len(store)
    with tqdm(
        total=total,
        unit="row",
        desc="curvature",
        disable=not progress or not total,
        dynamic_ncols=True,
        mininterval=0.5,
    ) as bar:
        if kind == "lowrank":
            return dict(
                compute_curvature(
                    store,
                    cfg.curvature,
                    device,
                    seed=cfg.seed,
                    progress=bar.update,
                    combine=combine,
                )  # fmt: skip
            )
        if moments is None:
            raise ConfigError(f"--curvature {kind}: no K-FAC moments for these rows")
        return dict(compute_kronecker(store, moments(), cfg.curvature, device, bar.update, combine))
