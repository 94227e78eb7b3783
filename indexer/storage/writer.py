"""The index writer: preallocates every array of a partial file, streams factor rows into it
through a memory map with a per-row done mask (a killed build resumes), then writes the
curvature basis and the fingerprint and publishes the file by atomic rename."""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from ..curvature.base import Basis
from ..data import Example
from ..engine.kronecker import KroneckerMoments
from ..engine.projection import Projections
from ..errors import ConfigError, IndexFormatError
from . import integrity
from .codec import NUMPY_STORAGE
from .files import fsync_rename
from .format import PAGE, contiguous, fingerprint, h5open, partial_path, write_curvature
from .manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    STR,
    Manifest,
    read_h5_manifest,
    write_h5_manifest,
)
from .moments import write_moments
from .store import MemoryFactorStore


class IndexWriter:
    """A partial index file being filled; ``publish`` turns it into the finished index."""

    def __init__(self, final: Path, manifest: Manifest):
        self.final = Path(final)
        self.path = partial_path(final)
        self.manifest = manifest
        self.layout = manifest.layout
        self.n = manifest.n_examples
        with h5open(self.path, "r") as f:
            off_f, off_d = f["factors"].id.get_offset(), f["done"].id.get_offset()
        dtype = NUMPY_STORAGE[manifest.storage_dtype]
        self.factors: np.memmap[Any, Any] = np.memmap(
            self.path, dtype=dtype, mode="r+", offset=off_f, shape=(self.n, self.layout.width)
        )
        self.done: np.memmap[Any, Any] = np.memmap(
            self.path, dtype=np.uint8, mode="r+", offset=off_d, shape=(self.n,)
        )

    @classmethod
    def create(
        cls,
        final: str | Path,
        manifest: Manifest,
        examples: Sequence[Example],
        n_tokens: npt.NDArray[np.integer[Any]],
        projections: Projections | None,
    ) -> IndexWriter:
        """Preallocate the partial file with everything known before featurization."""
        path = partial_path(final)
        layout = manifest.layout
        n = len(examples)
        with h5py.File(path, "w", alignment_threshold=1, alignment_interval=PAGE) as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["status"] = "building"
            write_h5_manifest(f, manifest)
            contiguous(f, "factors", (n, layout.width), NUMPY_STORAGE[manifest.storage_dtype])
            contiguous(f, "done", (n,), np.dtype(np.uint8))
            g = f.create_group("examples")
            g.create_dataset("prompt", data=[e.prompt for e in examples], dtype=STR)
            g.create_dataset("completion", data=[e.completion for e in examples], dtype=STR)
            g.create_dataset(
                "meta",
                data=[json.dumps(e.meta, ensure_ascii=False, default=str) for e in examples],
                dtype=STR,
            )
            g.create_dataset("n_tokens", data=np.asarray(n_tokens, dtype=np.int32))
            for name, (p_in, p_out) in (projections or {}).items():
                pg = f.create_group(f"projections/{name}")
                pg.create_dataset("in", data=p_in.astype("<f4"))
                pg.create_dataset("out", data=p_out.astype("<f4"))
            f.flush()
        return cls(Path(final), manifest)

    @classmethod
    def resume(cls, final: str | Path) -> tuple[IndexWriter, Manifest]:
        """Reopen an existing partial file; returns the writer and the manifest it was begun
        with."""
        path = partial_path(final)
        with h5open(path, "r") as f:
            manifest = read_h5_manifest(f, path)
            if "factors" not in f or "done" not in f:
                raise IndexFormatError(f"{path}: partial build without factor storage")
        return cls(Path(final), manifest), manifest

    def store(self) -> MemoryFactorStore:
        """The rows written so far (for the curvature, once every row is)."""
        return MemoryFactorStore(self.layout, self.factors, self.manifest.storage_dtype)

    def mine(self) -> npt.NDArray[np.bool_]:
        """Bool (N,): the rows this process writes (every row of a single file)."""
        return np.ones(self.n, dtype=bool)

    def pending(self) -> npt.NDArray[np.bool_]:
        """Bool (N,): rows still to compute."""
        pending: npt.NDArray[np.bool_] = np.asarray(self.done) == 0
        return pending

    def spans(self) -> dict[int, npt.NDArray[np.int64]]:
        """One part, every row (a single file is finished only by ``publish``)."""
        return {0: np.arange(self.n)}

    def finish(self, j: int, moments: KroneckerMoments | None = None, threads: int = 1) -> None:
        if moments is not None:
            raise ConfigError("a single-file index keeps no K-FAC moments (use --shard-size N)")

    def moments(self) -> KroneckerMoments:
        raise ConfigError("a single-file index keeps no K-FAC moments (use --shard-size N)")

    def write_rows(
        self, rows: npt.NDArray[np.integer[Any]], values: npt.NDArray[np.generic]
    ) -> None:
        """Store encoded rows, make them durable, then mark them done (in that order)."""
        order = np.argsort(rows)
        self.factors[rows[order]] = values[order]
        self.factors.flush()
        self.done[rows] = 1
        self.done.flush()

    def publish(self, manifest: Manifest, curvature: Basis, threads: int = 1) -> str:
        """Write basis, checksums, final manifest and fingerprint, then atomically rename into
        place. ``threads`` hash the factor blocks in parallel."""
        if not np.all(self.done):
            raise IndexFormatError("cannot publish: some rows are not computed")
        digest = fingerprint(manifest, self.factors, curvature)
        manifest = manifest.replace(fingerprint=digest)
        block_rows = integrity.block_rows_for(self.layout.width * self.factors.itemsize)
        blocks = integrity.factor_digests(self.factors, block_rows, threads)
        del self.factors, self.done  # release the maps before h5py rewrites metadata
        with h5py.File(self.path, "r+") as f:
            write_curvature(f, curvature)
            integrity.write(f, self.n, block_rows, blocks, curvature)
            f["integrity"].attrs["manifest"] = integrity.manifest_digest(manifest.hashed(), digest)
            write_h5_manifest(f, manifest)
            f.attrs["fingerprint"] = digest
            f.attrs["status"] = "complete"
        fsync_rename(self.path, self.final)
        return digest

    def finish_shard(self, threads: int = 1, moments: KroneckerMoments | None = None) -> str:
        """Publish this file as a shard of a sharded index (format 2): row checksums (and the
        K-FAC ``moments`` of its rows), status ``shard``, atomic rename; returns its
        fingerprint (a digest of its row checksums)."""
        if not np.all(self.done):
            raise IndexFormatError(f"cannot finish {self.path}: some rows are not computed")
        block_rows = integrity.block_rows_for(self.layout.width * self.factors.itemsize)
        blocks = integrity.factor_digests(self.factors, block_rows, threads)
        del self.factors, self.done
        with h5py.File(self.path, "r+") as f:
            integrity.write_rows(f, self.n, block_rows, blocks)
            if moments is not None:
                write_moments(f, moments)
            digest = integrity.rows_digest(f)
            f.attrs["fingerprint"] = digest
            f.attrs["status"] = "shard"
        fsync_rename(self.path, self.final)
        return digest


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """One build per output at a time (advisory lock on OUTPUT.lock, removed afterwards)."""
    lock = Path(str(out) + ".lock")
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another build is writing {out} (lock {lock})") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
