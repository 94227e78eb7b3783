"""One index built by several processes with torch.distributed (started by torchrun, which
sets RANK / WORLD_SIZE / LOCAL_WORLD_SIZE; on one machine or many with its rendezvous flags).

Rank k featurizes the shards j with j % world == k and writes them itself (no rows travel);
the curvature's streamed randomized SVD sums every pass's per-rank products with
``all_reduce`` (gloo on CPU, NCCL on GPU), so every rank holds the same basis; rank 0 gathers
the shards' entries and publishes. A killed build rerun with the same command finishes only
the missing rows (each rank resumes its shards from their done masks).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..config import BuildConfig
from ..data import load_examples
from ..errors import LorifError
from ..storage.writer import build_lock
from ..threads import available_cpus, use_threads
from ..verbatim import publish_verbatim
from .budget import layer_ranks
from .inputs import check_output, check_rank, language_model, make_manifest, projections_to_store
from .steps import curvature_over, featurize_rows, finished
from .writers import prepare_build_dir, sharded_writer


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int
    local_world: int

    @property
    def lead(self) -> bool:
        return self.rank == 0


def ranks_from_env() -> Ranks | None:
    """This process's place in a torchrun launch, or None when it runs alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Ranks(
        int(os.environ["RANK"]),
        world,
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def _lead_first(ranks: Ranks, step: Any) -> None:
    """Run ``step()`` on rank 0; if it raised a LorifError, raise the same one-line error on
    every rank (not a hang at the next collective)."""
    failure: list[Any] = [None]
    if ranks.lead:
        try:
            step()
        except LorifError as e:
            failure = [(type(e), str(e))]
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        kind, message = failure[0]
        raise kind(message)


def build_distributed(cfg: BuildConfig, ranks: Ranks, progress: bool = True) -> Path:
    """This rank's part of the build of ``cfg`` (a sharded index); rank 0 publishes it."""
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
        cfg = replace(cfg, device=f"cuda:{ranks.local_rank}")
    use_threads(cfg.threads or max(1, available_cpus() // ranks.local_world))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        return _build(cfg, ranks, progress and ranks.lead)
    finally:
        dist.destroy_process_group()


def _build(cfg: BuildConfig, ranks: Ranks, progress: bool) -> Path:
    started = time.perf_counter()
    out = Path(cfg.output)
    _lead_first(ranks, lambda: check_output(cfg))
    with build_lock(out) if ranks.lead else contextlib.nullcontext():
        examples = load_examples(cfg.data, cfg.limit)
        featurizer, model_info, task_info = language_model(cfg)
        check_rank(cfg, featurizer)
        lengths = np.array([featurizer.task.length(ex) for ex in examples], dtype=np.int64)
        # every process chooses (a budget that is too small fails on each, not as a hang);
        # the lead's choice is the one kept, however the devices round
        chosen = [layer_ranks(cfg, featurizer, examples)]
        dist.broadcast_object_list(chosen, src=0)
        manifest = make_manifest(cfg, featurizer, len(examples), model_info, task_info, chosen[0])
        _lead_first(ranks, lambda: prepare_build_dir(cfg, manifest))
        writer = sharded_writer(
            cfg,
            manifest,
            examples,
            lengths,
            projections_to_store(cfg, featurizer),
            owner=(ranks.rank, ranks.world),
            prepared=True,
        )
        info = {"load_seconds": round(time.perf_counter() - started, 3)}
        info.update(featurize_rows(cfg, writer, featurizer, examples, lengths, progress))
        t1 = time.perf_counter()
        store = writer.store()
        curvature = curvature_over(
            cfg, store, featurizer.device, progress, dist.all_reduce, writer.moments
        )
        mine = writer.finish_mine(torch.get_num_threads())
        gathered: list[Any] = [None] * ranks.world
        dist.all_gather_object(gathered, (mine, info))
        if ranks.lead:
            entries = {j: e for shards, _ in gathered for j, e in shards.items()}
            info = {
                "load_seconds": max(i["load_seconds"] for _, i in gathered),
                "featurize_seconds_this_run": max(
                    i["featurize_seconds_this_run"] for _, i in gathered
                ),
                "resumed_rows": sum(i["resumed_rows"] for _, i in gathered),
                "processes": ranks.world,
            }
            times, device = (started, t1), featurizer.device
            manifest = finished(cfg, manifest, curvature, writer.n, info, times, lengths, device)
            writer.publish(manifest, curvature, entries=entries)
            publish_verbatim(out)
        dist.barrier()
    return out
