"""The heavy steps of a build, shared by one-process, distributed and growing builds:
featurize this process's pending rows (model -> factors -> a RowWriter), the curvature over its
rows, and publishing."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm.auto import tqdm

from ..config import BuildConfig
from ..curvature import method
from ..curvature.base import Basis
from ..data import Example
from ..engine.factorize import factorize_layers
from ..engine.kronecker import KroneckerMoments
from ..engine.layout import RowSource
from ..engine.truncation import WhitenedTruncation
from ..models.featurizer import Featurizer
from ..storage.manifest import CurvatureRecord, Manifest
from ..storage.rows import BackgroundRows, RowWriter
from ..verbatim import publish_verbatim

Batches = list[npt.NDArray[np.int64]]
log = logging.getLogger("lorif")


def featurize_rows(
    cfg: BuildConfig,
    writer: RowWriter,
    featurizer: Featurizer,
    examples: list[Example],
    lengths: npt.NDArray[np.int64],
    progress: bool,
) -> dict[str, Any]:
    """Compute, factorize and write every pending row; returns build_info figures. When the
    curvature method needs K-FAC moments, each part's moments are summed while its rows are
    featurized and the part is finished with them as soon as they are written; an unfinished
    part is recomputed whole, so its moments always cover exactly its rows."""
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
    metric = truncation_metric(cfg, featurizer, examples) if todo_rows else None
    ranks = writer.layout.ranks_by_name  # per layer: --rank, or chosen for --bytes-per-example
    background = BackgroundRows(writer, cfg.dtype)
    try:
        for part, batches in plan:
            moments = KroneckerMoments() if part is not None else None
            for rows in batches:
                grads = featurizer.gradients([examples[i] for i in rows], moments=moments)
                factors = (
                    metric.factorize(grads, ranks, cfg.factor_method)
                    if metric
                    else factorize_layers(grads, ranks, cfg.factor_method)
                )
                background.submit(rows, writer.layout.pack(factors))
                done_rows += len(rows)
                bar.set_postfix_str(f"{done_rows}/{total} examples", refresh=False)
                bar.update(int(lengths[rows].sum()))
            if part is not None:
                background.wait()
                writer.finish(part, moments, torch.get_num_threads())
    finally:
        background.close()  # every submitted batch is written (and marked done) first
        bar.close()
    return {
        "featurize_seconds_this_run": round(time.perf_counter() - t0, 3),
        "resumed_rows": total - todo_rows,
    }


def truncation_metric(
    cfg: BuildConfig, featurizer: Featurizer, examples: list[Example]
) -> WhitenedTruncation | None:
    """``--truncation kfac``: the whitening of the moments of the first
    ``--truncation-sample`` of ``examples`` (every process of a build computes the same one;
    ``index add`` its added examples'); None for plain truncation."""
    if cfg.truncation == "plain":
        return None
    moments = sample_moments(featurizer, sample_batches(cfg, examples))
    return WhitenedTruncation.from_moments(moments, cfg.truncation_damping).to(featurizer.device)


def sample_batches(cfg: BuildConfig, examples: list[Example]) -> list[list[Example]]:
    """The first ``--truncation-sample`` examples in batches of ``--batch-size``: the sample
    the whitened truncation and the storage budget are computed on."""
    sample = examples[: cfg.truncation_sample]
    return [sample[s : s + cfg.batch_size] for s in range(0, len(sample), cfg.batch_size)]


def sample_moments(featurizer: Featurizer, batches: list[list[Example]]) -> KroneckerMoments:
    """The token-level K-FAC moments of ``batches`` (one forward/backward pass over them)."""
    moments = KroneckerMoments()
    for batch in batches:
        featurizer.gradients(batch, moments=moments)
    return moments


def _plan(
    cfg: BuildConfig, writer: RowWriter, lengths: npt.NDArray[np.int64]
) -> list[tuple[int | None, Batches]]:
    """The batches still to run: (None, batches over every pending row) or, when the curvature
    needs moments, (part, its batches) per unfinished part. Batches hold rows of similar length
    (less padding) in a fixed composition and order, so a resume recomputes what an interrupted
    run would."""

    def batches(rows: npt.NDArray[np.int64]) -> Batches:
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        out = (
            by_tokens(rows, lengths, cfg.batch_tokens)
            if cfg.batch_tokens
            else [rows[s : s + cfg.batch_size] for s in range(0, len(rows), cfg.batch_size)]
        )
        # Run them in a seeded shuffled order: the cost per token is then the same early and
        # late, so the progress bar's remaining time holds (in length order it was 2-20x off).
        order = np.random.default_rng(cfg.seed).permutation(len(out))
        return [out[i] for i in order]

    if method(cfg.curvature.kind).needs_moments:
        return [(j, batches(rows)) for j, rows in writer.spans().items()]
    pending = writer.pending()
    every = batches(np.flatnonzero(writer.mine()))  # this process's rows
    return [(None, [b for b in every if pending[b].any()])]


def by_tokens(rows: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], budget: int) -> Batches:
    """``rows`` (sorted by length) cut into consecutive batches of at most ``budget`` padded
    tokens each (count x the last, longest row's length); a longer row is a batch alone."""
    out, start = [], 0
    while start < len(rows):
        stop = start + 1
        while stop < len(rows) and int(lengths[rows[stop]]) * (stop + 1 - start) <= budget:
            stop += 1
        out.append(rows[start:stop])
        start = stop
    return out


def curvature_over(
    cfg: BuildConfig,
    store: RowSource,
    device: torch.device,
    progress: bool,
    combine: Callable[[torch.Tensor], object] | None = None,
    moments: Callable[[], KroneckerMoments] | None = None,
) -> Basis:
    """The curvature of ``store``'s rows (``combine``: summed over the processes of a build;
    ``moments``: the K-FAC moments of those rows), with a progress bar."""
    curvature = method(cfg.curvature.kind)
    warn_rank_beyond_rows(cfg, len(store))
    total = curvature.passes(cfg.curvature) * len(store)
    with tqdm(
        total=total,
        unit="row",
        desc="curvature",
        disable=not progress or not total,
        dynamic_ncols=True,
        mininterval=0.5,
    ) as bar:
        return curvature.compute(store, cfg, device, bar.update, combine, moments)


def warn_rank_beyond_rows(cfg: BuildConfig, rows: int) -> None:
    """Say so when the low-rank basis asks for more directions than ``rows`` examples span:
    its damping (alpha times the mean of the r + p top eigenvalues) then averages in zeros."""
    c = cfg.curvature
    if c.kind == "lowrank" and c.rank + c.oversample > rows:
        log.warning(
            "--curvature-rank %d (+ %d oversampling) is more than the %d examples the "
            "curvature is computed over: at most %d eigenvalues per layer are nonzero, so "
            "lambda = alpha * mean(top r + p eigenvalues) averages in zeros and comes out "
            "smaller; use --curvature-rank %d or less",
            c.rank, c.oversample, rows, rows, max(1, rows - c.oversample),
        )  # fmt: skip


def curvature_record(cfg: BuildConfig, curvature: Basis, rows: int) -> CurvatureRecord:
    """What the manifest records of a basis computed over ``rows`` rows with ``cfg``."""
    c = cfg.curvature
    return CurvatureRecord(
        kind=c.kind,
        rank=c.rank,
        oversample=c.oversample,
        power_iters=c.power_iters,
        damping=c.damping,
        damping_abs=c.damping_abs,
        lambdas={n: layer.lam for n, layer in curvature.items()},
        rows=rows,
    )


def fill_and_publish(
    cfg: BuildConfig,
    writer: RowWriter,
    featurizer: Featurizer,
    examples: list[Example],
    lengths: npt.NDArray[np.int64],
    manifest: Manifest,
    started: float,
    progress: bool,
) -> Path:
    """Featurize the writer's pending rows, compute the curvature over all its rows, publish."""
    info: dict[str, Any] = {"load_seconds": round(time.perf_counter() - started, 3)}
    info.update(featurize_rows(cfg, writer, featurizer, examples, lengths, progress))
    t1 = time.perf_counter()
    curvature = curvature_over(
        cfg, writer.store(), featurizer.device, progress, None, writer.moments
    )
    times, device = (started, t1), featurizer.device
    manifest = finished(cfg, manifest, curvature, writer.n, info, times, lengths, device)
    writer.publish(manifest, curvature, torch.get_num_threads())
    publish_verbatim(cfg.output)
    return Path(cfg.output)


def finished(
    cfg: BuildConfig,
    manifest: Manifest,
    curvature: Basis,
    rows: int,
    info: dict[str, Any],
    times: tuple[float, float],
    lengths: npt.NDArray[np.int64],
    device: torch.device,
) -> Manifest:
    """``manifest`` with the curvature record (``rows``: the rows the basis covers) and the
    build's figures (``times``: when the build and its curvature started)."""
    started, curvature_started = times
    build_info = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **info,
        "curvature_seconds": round(time.perf_counter() - curvature_started, 3),
        "total_seconds_this_run": round(time.perf_counter() - started, 3),
        "total_tokens": int(lengths.sum()),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "output": str(cfg.output),
    }
    return manifest.replace(curvature=curvature_record(cfg, curvature, rows), build_info=build_info)
