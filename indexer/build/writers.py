"""The writers of sharded indexes (format 2): a sharded build started or resumed, examples
added to an index built before, and the removal of an index directory (for --overwrite)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..config import BuildConfig
from ..data import Example
from ..engine.projection import Projections
from ..errors import ConfigError, IndexFormatError, ResumeMismatchError
from ..storage.manifest import (
    BUILDING,
    MANIFEST,
    Manifest,
    read_manifest_file,
    write_manifest_file,
)
from ..storage.shard_writer import ShardedWriter
from .inputs import resume_differences

# what `lorif index add` must find equal in the index it grows (besides the build settings)
SAME_FOR_ADD = ("layers", "rank", "storage_dtype", "row_width", "projection", "task")
NOT_COMPARED = ("data", "limit")  # what may differ between the index's build and an add


def check_settings(
    index_dir: Path, old: Manifest, build_config: dict[str, object], diff: Sequence[str] = ()
) -> None:
    """ConfigError (one line) when ``build_config`` or ``diff`` says the rows would differ."""
    diff = [*diff] + [
        k for k, v in old.build_config.items() if k not in NOT_COMPARED and build_config.get(k) != v
    ]
    if diff:
        raise ConfigError(
            f"{index_dir} was built with other {', '.join(sorted(set(diff)))}: examples can be "
            "added only with the index's own model and settings"
        )


def remove_index_dir(out: Path) -> None:
    """Delete a sharded index (or a build of one) at ``out``: only the files an index consists
    of, so a wrong path never takes a user's other files with it."""
    if not (out / MANIFEST).exists() and not (out / BUILDING).exists():
        raise ConfigError(f"{out} is a directory but not a LoRIF index; not replacing it")
    patterns = (MANIFEST, BUILDING, "*.tmp", "basis-*.h5", "basis.h5.partial", "verbatim.sqlite*")
    for pattern in (*patterns, "shards/*.h5", "shards/*.h5.partial"):
        for f in out.glob(pattern):
            f.unlink()
    for d in (out / "shards", out):
        if d.exists() and not any(d.iterdir()):
            d.rmdir()
    if out.exists():
        raise ConfigError(f"{out}: other files are in the index directory; remove them first")


def prepare_build_dir(cfg: BuildConfig, manifest: Manifest) -> None:
    """Make ``cfg.output`` ready for a sharded build: a new directory holding the build's
    manifest, or the one an interrupted run with the same settings left (else one line of
    ResumeMismatchError)."""
    out = Path(cfg.output)
    if cfg.overwrite and out.is_dir():
        remove_index_dir(out)
    if (out / BUILDING).exists():
        old = read_manifest_file(out / BUILDING)
        diff = resume_differences(old, manifest, cfg)
        if diff:
            raise ResumeMismatchError(
                f"{out} is a partial build with different settings ({', '.join(diff)}); rerun "
                "with the same settings or pass --overwrite"
            )
    else:
        out.mkdir()
        write_manifest_file(out / BUILDING, manifest)


def sharded_writer(
    cfg: BuildConfig,
    manifest: Manifest,
    examples: list[Example],
    n_tokens: npt.NDArray[np.int64],
    projections: Projections | None,
    owner: tuple[int, int] = (0, 1),
    prepared: bool = False,
) -> ShardedWriter:
    """The writer of a sharded build at ``cfg.output`` (new, or resumed: finished shards are
    kept, partial ones resumed); ``prepared``: ``prepare_build_dir`` ran already (on rank 0)."""
    if not prepared:
        prepare_build_dir(cfg, manifest)
    try:
        return ShardedWriter(
            Path(cfg.output), manifest, examples, n_tokens, projections, owner=owner
        )
    except IndexFormatError as e:
        raise ResumeMismatchError(f"cannot resume: {e}; pass --overwrite to start over") from None


def growth_writer(
    index_dir: Path,
    old: Manifest,
    manifest: Manifest,
    examples: list[Example],
    n_tokens: npt.NDArray[np.int64],
    projections: Projections | None,
) -> ShardedWriter:
    """The writer that adds ``examples`` to the sharded index at ``index_dir`` (published
    manifest ``old``; rebuilt for the same model and settings: ``manifest``); refused in one
    line when anything that determines the rows differs."""
    diff = old.differences(manifest, SAME_FOR_ADD)
    if old.model_fingerprint != manifest.model_fingerprint:
        diff.append("model weights")
    check_settings(index_dir, old, manifest.build_config, diff)
    return ShardedWriter(index_dir, manifest, examples, n_tokens, projections, old.shards or [])
