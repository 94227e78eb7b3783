"""A sharded index over time: add examples (new shards, the index's own model and settings) and
refresh the curvature over every shard. Each publishes a new basis and replaces manifest.json
atomically; a server that opened the index keeps answering from the files it opened."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import BuildConfig
from ..data import load_examples
from ..errors import ConfigError, IndexFormatError
from ..models.loading import resolve_device
from ..storage.manifest import Manifest, ShardEntry, read_dir_manifest
from ..storage.reader import Index
from ..storage.shard_writer import publish_manifest, read_basis_digest, write_basis
from ..storage.writer import build_lock
from ..threads import use_threads
from ..verbatim import publish_verbatim
from .inputs import language_model, make_manifest, projections_to_store
from .steps import curvature_over, curvature_record, featurize_rows, fill_and_publish
from .writers import check_settings, growth_writer


def _sharded(index_dir: str | Path) -> tuple[Path, Manifest]:
    path = Path(index_dir)
    if not path.is_dir():
        raise ConfigError(
            f"{path} is a single-file index; examples can be added to a sharded one (build it "
            "with --shard-size N)"
        )
    try:
        return path, read_dir_manifest(path)
    except IndexFormatError as e:
        raise ConfigError(str(e)) from None


def add_examples(
    index_dir: str | Path,
    data: str,
    *,
    limit: int = 0,
    config: BuildConfig | None = None,
    device: str = "auto",
    threads: int = 0,
    progress: bool = True,
    curvature: bool = True,
) -> Path:
    """Featurize the examples of ``data`` into new shards of the index at ``index_dir`` with
    its own model and settings (``config``: other settings, refused when they change the rows),
    refresh the curvature over every shard (``curvature=False``: keep the basis of the rows
    before, to refresh later with ``refresh_curvature``) and publish."""
    path, old = _sharded(index_dir)
    cfg = config or old.config()
    cfg = dataclasses.replace(
        cfg,
        data=data,
        limit=limit,
        output=str(path),
        device=device,
        threads=threads,
        shard_size=old.rows_per_shard,
    )
    cfg.validate()
    check_settings(path, old, cfg.content_dict())  # before the model loads
    use_threads(threads)
    with build_lock(path):
        started = time.perf_counter()
        examples = load_examples(data, limit)
        featurizer, model_info, task_info = language_model(cfg)
        lengths = np.array([featurizer.task.length(ex) for ex in examples], dtype=np.int64)
        ranks = old.layout.ranks  # the index's own, not chosen again for the added examples
        manifest = make_manifest(cfg, featurizer, len(examples), model_info, task_info, ranks)
        build_config = {**manifest.build_config, "data": old.config().data}
        manifest = manifest.replace(build_config=build_config)
        projections = projections_to_store(cfg, featurizer)
        try:
            writer = growth_writer(path, old, manifest, examples, lengths, projections)
        except IndexFormatError as e:
            raise ConfigError(
                f"{e}: an interrupted add of other data; rerun it, or remove "
                f"{path}/shards/*.h5.partial to start over"
            ) from None
        if curvature:
            return fill_and_publish(
                cfg, writer, featurizer, examples, lengths, manifest, started, progress
            )
        info = featurize_rows(cfg, writer, featurizer, examples, lengths, progress)
        _keep_basis(
            path,
            old,
            writer.n,
            writer.base + list(writer.finish_mine(torch.get_num_threads()).values()),
            info,
        )
        publish_verbatim(path)
        return path


def _keep_basis(
    path: Path, old: Manifest, n: int, shards: list[ShardEntry], info: dict[str, Any]
) -> None:
    """Publish ``shards`` (``n`` rows) with the basis of ``old``'s rows, which it still
    covers (``lorif index curvature`` refreshes it)."""
    basis, curvature = str(old.basis), old.curvature
    assert curvature is not None, "a published index records its curvature"
    stale = dataclasses.replace(curvature, rows=curvature.rows or old.n_examples)
    grown = old.replace(n_examples=n, shards=shards, curvature=stale, build_info=info)
    publish_manifest(path, grown, basis, read_basis_digest(path / basis))


def refresh_curvature(
    index_dir: str | Path, *, device: str = "auto", threads: int = 0, progress: bool = True
) -> str:
    """Recompute the curvature basis over every row of a sharded index and publish it (the
    shards stay as they are); returns the new fingerprint."""
    path, _ = _sharded(index_dir)
    use_threads(threads)
    with build_lock(path), Index(path) as index:
        cfg = index.manifest.config()
        store = index.store()
        curvature = curvature_over(
            cfg, store, resolve_device(device), progress, moments=index.moments
        )
        lambdas = curvature_record(cfg, curvature, len(store)).lambdas
        record = dataclasses.replace(index.curvature_record, lambdas=lambdas, rows=len(store))
        basis, digest = write_basis(path, curvature, index.stored_projections())
        return publish_manifest(path, index.manifest.replace(curvature=record), basis, digest)
