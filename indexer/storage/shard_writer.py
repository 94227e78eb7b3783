"""The sharded index (format 2, docs/index-format.md): a directory of shard files in the
single-file row layout, one basis file (curvature and projections) and ``manifest.json``.

``ShardedWriter`` fills the shards of a build (or of rows added to an index) and publishes by
writing a new basis file and replacing ``manifest.json`` atomically: a reader opens either the
old index or the new one, and a server keeps the files it opened (unlinking an open file does
not take it away on POSIX).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from ..curvature.base import Basis
from ..data import Example
from ..engine.kronecker import KroneckerMoments
from ..engine.projection import Projections
from ..errors import IndexFormatError
from . import integrity
from .codec import NUMPY_STORAGE
from .concat import ShardedFactorStore
from .files import fsync_rename, read_json
from .format import PAGE, partial_path, write_curvature
from .manifest import (
    BUILDING,
    DIR_FORMAT_VERSION,
    FORMAT_NAME,
    MANIFEST,
    Manifest,
    ShardEntry,
    write_manifest_file,
)
from .moments import read_moments
from .store import FactorStore, MemoryFactorStore, MmapFactorStore
from .writer import IndexWriter


def shard_name(k: int) -> str:
    return f"shards/{k:05d}.h5"


def write_basis(out: Path, curvature: Basis, projections: Projections | None) -> tuple[str, str]:
    """Write a new basis file; returns (its name in ``out``, the digest of its checksums)."""
    tmp = out / "basis.h5.partial"
    with h5py.File(tmp, "w", alignment_threshold=1, alignment_interval=PAGE) as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = DIR_FORMAT_VERSION
        write_curvature(f, curvature)
        for name, (p_in, p_out) in (projections or {}).items():
            g = f.create_group(f"projections/{name}")
            g.create_dataset("in", data=p_in.astype("<f4"))
            g.create_dataset("out", data=p_out.astype("<f4"))
        integrity.write_basis(f, curvature)
        digest = integrity.curvature_digest(curvature) + integrity.projections_digest(f)
    name = f"basis-{hashlib.blake2b(digest, digest_size=6).hexdigest()}.h5"
    fsync_rename(tmp, out / name)
    return name, digest.hex()


def read_basis_digest(path: Path) -> str:
    """The digest ``write_basis`` returned for the basis file at ``path`` (its checksums)."""
    with h5py.File(path, "r") as f:
        return integrity.basis_digest(f)


class ShardedWriter:
    """The shards of a build: ``base`` (finished shards of the index rows are added to) then
    shards of ``manifest.rows_per_shard`` rows for the new examples, created or resumed as
    found on disk.
    Row ids are relative to the first new row. With ``owner = (rank, world)`` (a build on
    several processes) this process writes only the new shards k with k % world == rank, and
    streams only those (and, on rank 0, the base) for the curvature."""

    def __init__(
        self,
        out: Path,
        manifest: Manifest,
        examples: Sequence[Example],
        n_tokens: npt.NDArray[np.integer[Any]],
        projections: Projections | None,
        base: Sequence[ShardEntry] = (),
        owner: tuple[int, int] = (0, 1),
    ):
        self.out, self.manifest, self.projections = Path(out), manifest, projections
        self.owner = owner
        self.layout = manifest.layout
        self.dtype: str = manifest.storage_dtype
        self.base = list(base)
        self.first = sum(b.rows for b in self.base)
        shard_size = manifest.rows_per_shard
        (self.out / "shards").mkdir(parents=True, exist_ok=True)
        spans = [
            (start, min(start + shard_size, len(examples)))
            for start in range(0, len(examples), shard_size)
        ]
        self.sizes = [stop - start for start, stop in spans]
        self.offsets = np.cumsum([0, *self.sizes])  # relative to self.first
        self.writers: dict[int, IndexWriter | FinishedShard] = {}  # new shards this process owns
        self.finished: dict[int, str] = {}  # fingerprints of the finished new shards
        for j, (start, stop) in enumerate(spans):
            if j % owner[1] == owner[0]:
                shard = manifest.replace(
                    n_examples=stop - start, shard={"first_id": self.first + start}
                )
                self.writers[j] = self._open(j, shard, examples[start:stop], n_tokens[start:stop])

    def _open(
        self,
        j: int,
        shard: Manifest,
        examples: Sequence[Example],
        n_tokens: npt.NDArray[np.integer[Any]],
    ) -> IndexWriter | FinishedShard:
        final = self.out / shard_name(len(self.base) + j)
        if final.exists():  # finished by an earlier run
            with h5py.File(final, "r") as f:
                self.finished[j] = str(f.attrs["fingerprint"])
            return FinishedShard(final, shard)
        if partial_path(final).exists():
            writer, old = IndexWriter.resume(final)
            same = not old.differences(shard, ("shard", "n_examples"))
            if not same or not _holds(writer.path, examples):
                raise IndexFormatError(f"{writer.path} holds the rows of other examples")
            return writer
        return IndexWriter.create(final, shard, examples, n_tokens, None)

    @property
    def n(self) -> int:
        """Rows of the index once published (base and new)."""
        return self.first + int(self.offsets[-1])

    def mine(self) -> npt.NDArray[np.bool_]:
        """Bool (new rows,): the rows this process writes."""
        return np.concatenate(
            [np.full(n, j in self.writers) for j, n in enumerate(self.sizes)] or [np.zeros(0)]
        ).astype(bool)

    def pending(self) -> npt.NDArray[np.bool_]:
        """Bool (new rows,): rows this process still has to compute."""
        parts = [
            self.writers[j].pending() if j in self.writers else np.zeros(n, dtype=bool)
            for j, n in enumerate(self.sizes)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)

    def write_rows(self, rows: npt.NDArray[np.integer[Any]], values: npt.NDArray[Any]) -> None:
        """Store rows (ids relative to the first new row) in their shards."""
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for j in np.unique(shard_of):
            mine, writer = shard_of == j, self.writers[int(j)]
            if not isinstance(writer, IndexWriter):
                raise IndexFormatError(f"rows for shard {int(j)}, which is finished")
            writer.write_rows(rows[mine] - self.offsets[j], values[mine])

    def store(self) -> FactorStore:
        """The rows this process streams for the curvature (all of them in one process)."""
        parts: list[FactorStore] = []
        if self.owner[0] == 0:
            parts += [
                MmapFactorStore(self.layout, *_factors_at(self.out / b.file), self.dtype)
                for b in self.base
            ]
        for w in self.writers.values():
            parts.append(
                MmapFactorStore(self.layout, *_factors_at(w.final), self.dtype)
                if isinstance(w, FinishedShard)
                else MemoryFactorStore(self.layout, w.factors, self.dtype)
            )
        if not parts:  # a process that owns no shard adds nothing to the sums
            return MemoryFactorStore(
                self.layout, np.zeros((0, self.layout.width), NUMPY_STORAGE[self.dtype]), self.dtype
            )
        return ShardedFactorStore(parts)

    def spans(self) -> dict[int, npt.NDArray[np.int64]]:
        """The row ids (relative to the first new row) of each unfinished shard this process
        writes."""
        return {
            j: np.arange(self.offsets[j], self.offsets[j + 1])
            for j in self.writers
            if j not in self.finished
        }

    def finish(self, j: int, moments: KroneckerMoments | None = None, threads: int = 1) -> None:
        """Finish shard ``j`` now (every row written), with the K-FAC ``moments`` of its rows."""
        w = self.writers[j]
        if isinstance(w, IndexWriter):
            self.finished[j] = w.finish_shard(threads, moments)
            self.writers[j] = FinishedShard(w.final, w.manifest)

    def moments(self) -> KroneckerMoments:
        """The K-FAC moments of the rows ``store`` streams (finished shards only)."""
        files = [self.out / b.file for b in self.base] if self.owner[0] == 0 else []
        return read_moments(files + [w.final for w in self.writers.values()])

    def finish_mine(self, threads: int = 1) -> dict[int, ShardEntry]:
        """Finish this process's shards; their manifest entries by shard number."""
        for j in self.writers:
            self.finish(j, None, threads)
        return {
            j: ShardEntry(shard_name(len(self.base) + j), w.n, self.finished[j])
            for j, w in self.writers.items()
        }

    def publish(
        self,
        manifest: Manifest,
        curvature: Basis,
        threads: int = 1,
        entries: Mapping[int, ShardEntry] | None = None,
    ) -> str:
        """Write the basis and replace ``manifest.json`` (``entries``: every new shard's
        entry, gathered from the processes of the build; default: finish this process's)."""
        entries = self.finish_mine(threads) if entries is None else entries
        shards = self.base + [entries[j] for j in range(len(self.sizes))]
        basis, basis_digest = write_basis(self.out, curvature, self.projections)
        published = manifest.replace(n_examples=self.n, shards=shards)
        return publish_manifest(self.out, published, basis, basis_digest)


def publish_manifest(out: Path, manifest: Manifest, basis: str, basis_digest: str) -> str:
    """Replace ``out/manifest.json`` with ``manifest`` naming ``basis`` (atomically), end a
    build, and remove basis files that neither it nor the previous manifest names (a server
    may still be opening the previous one); returns the fingerprint."""
    manifest = manifest.replace(
        format=FORMAT_NAME, format_version=DIR_FORMAT_VERSION, basis=basis, fingerprint=None
    )
    manifest = manifest.replace(fingerprint=manifest.directory_fingerprint(basis_digest))
    target = out / MANIFEST
    # the previous basis: a server may still be opening it (any JSON will do to name it)
    previous = read_json(target).get("basis") if target.exists() else None
    write_manifest_file(target, manifest)
    (out / BUILDING).unlink(missing_ok=True)
    for stale in out.glob("basis-*.h5"):
        if stale.name not in (basis, previous):
            stale.unlink()
    return str(manifest.fingerprint)


class FinishedShard:
    """A shard finished (by this run or an earlier one): nothing pending, nothing to write."""

    def __init__(self, final: Path, manifest: Manifest):
        self.final, self.manifest, self.n = final, manifest, manifest.n_examples

    def pending(self) -> npt.NDArray[np.bool_]:
        return np.zeros(self.n, dtype=bool)


def _holds(path: Path, examples: Sequence[Example]) -> bool:
    """The partial shard at ``path`` was begun for these examples (same texts, in order)."""
    with h5py.File(path, "r") as f:
        g = f["examples"]
        stored = zip(g["prompt"].asstr()[()], g["completion"].asstr()[()], strict=True)
        return [(e.prompt, e.completion) for e in examples] == list(stored)


def _factors_at(path: Path) -> tuple[str, int, int]:
    with h5py.File(path, "r") as f:
        return str(path), int(f["factors"].id.get_offset()), int(f["factors"].shape[0])
