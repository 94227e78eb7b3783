"""The sharded index (format 2, docs/index-format.md): a directory of shard files in the
single-file row layout, one basis file (curvature and projections) and ``manifest.json``.

``ShardedWriter`` fills the shards of a build (or of rows added to an index) and publishes by
writing a new basis file and replacing ``manifest.json`` atomically: a reader opens either the
old index or the new one, and a server keeps the files it opened (unlinking an open file does
not take it away on POSIX).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from ..data import Example
from ..engine.curvature import LayerCurvature
from ..engine.layout import FactorLayout
from ..engine.projection import Projections
from ..errors import IndexFormatError
from . import integrity
from .format import FORMAT_NAME, PAGE, UNHASHED_KEYS, partial_path
from .sharded import ShardedFactorStore
from .store import FactorStore, MemoryFactorStore, MmapFactorStore
from .writer import IndexWriter, fsync_rename

DIR_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
BUILDING = "build.json"  # the manifest a build started with, until it publishes


def shard_name(k: int) -> str:
    return f"shards/{k:05d}.h5"


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Write JSON durably and atomically (temporary file, fsync, rename, fsync directory)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, sort_keys=True, indent=1))
    fsync_rename(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(value, dict):
        raise IndexFormatError(f"{path}: corrupted (not a JSON object)")
    return value


def dir_fingerprint(manifest: Mapping[str, Any], basis_digest: str) -> str:
    """blake2b-128 over the manifest (less fingerprint and build_info; it lists every shard's
    fingerprint) and the basis file's checksums."""
    body = {k: v for k, v in manifest.items() if k not in UNHASHED_KEYS}
    h = hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16)
    h.update(bytes.fromhex(basis_digest))
    return h.hexdigest()


def write_basis(
    out: Path, curvature: Mapping[str, LayerCurvature], projections: Projections | None
) -> tuple[str, str]:
    """Write a new basis file; returns (its name in ``out``, the digest of its checksums)."""
    tmp = out / "basis.h5.partial"
    with h5py.File(tmp, "w", alignment_threshold=1, alignment_interval=PAGE) as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = DIR_FORMAT_VERSION
        for name, c in curvature.items():
            g = f.create_group(f"curvature/{name}")
            g.create_dataset("V", data=c.V.astype("<f4"))
            g.create_dataset("sigma2", data=c.sigma2.astype("<f8"))
            g.attrs["lambda"] = float(c.lam)
        for name, (p_in, p_out) in (projections or {}).items():
            g = f.create_group(f"projections/{name}")
            g.create_dataset("in", data=p_in.astype("<f4"))
            g.create_dataset("out", data=p_out.astype("<f4"))
        integrity.write_basis(f, curvature)
        digest = integrity.curvature_digest(curvature) + integrity.projections_digest(f)
    name = f"basis-{hashlib.blake2b(digest, digest_size=6).hexdigest()}.h5"
    fsync_rename(tmp, out / name)
    return name, digest.hex()


class ShardedWriter:
    """The shards of a build: ``base`` (finished shards of the index rows are added to) then
    shards of ``shard_size`` rows for the new examples, created or resumed as found on disk.
    Row ids are global (the base's rows first)."""

    def __init__(
        self,
        out: Path,
        manifest: dict[str, Any],
        examples: Sequence[Example],
        n_tokens: npt.NDArray[np.integer[Any]],
        shard_size: int,
        projections: Projections | None,
        base: Sequence[Mapping[str, Any]] = (),
    ):
        self.out, self.manifest, self.projections = Path(out), manifest, projections
        self.shard_size = shard_size
        self.layout = FactorLayout.from_manifest(manifest)
        self.dtype: str = manifest["storage_dtype"]
        self.base = [dict(b) for b in base]
        first = sum(int(b["rows"]) for b in self.base)
        (self.out / "shards").mkdir(parents=True, exist_ok=True)
        self.writers: list[IndexWriter] = []
        self.finished: dict[int, str] = {}  # writer number -> fingerprint of a finished shard
        for j, start in enumerate(range(0, len(examples), shard_size)):
            stop = min(start + shard_size, len(examples))
            final = self.out / shard_name(len(self.base) + j)
            shard = {**manifest, "n_examples": stop - start, "shard": {"first_id": first + start}}
            self.writers.append(
                self._open(final, shard, examples[start:stop], n_tokens[start:stop])
            )
        self.first = first
        self.offsets = np.cumsum([first, *(w.n for w in self.writers)])

    def _open(
        self,
        final: Path,
        shard: dict[str, Any],
        examples: Sequence[Example],
        n_tokens: npt.NDArray[np.integer[Any]],
    ) -> IndexWriter:
        if final.exists():  # finished by an earlier run
            with h5py.File(final, "r") as f:
                self.finished[len(self.writers)] = str(f.attrs["fingerprint"])
            return _FinishedShard(final, shard)
        if partial_path(final).exists():
            writer, old = IndexWriter.resume(final)
            if old.get("shard") != shard["shard"] or old["n_examples"] != shard["n_examples"]:
                raise IndexFormatError(f"{writer.path} belongs to another build")
            return writer
        return IndexWriter.create(final, shard, examples, n_tokens, None)

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def pending(self) -> npt.NDArray[np.bool_]:
        """Bool (rows of the new shards,): rows still to compute (ids from ``self.first``)."""
        if not self.writers:
            return np.zeros(0, dtype=bool)
        return np.concatenate([w.pending() for w in self.writers])

    def write_rows(self, rows: npt.NDArray[np.integer[Any]], values: npt.NDArray[Any]) -> None:
        """Store rows (ids relative to ``self.first``) in their shards."""
        shard_of = np.searchsorted(self.offsets - self.first, rows, side="right") - 1
        for s in np.unique(shard_of):
            mine = shard_of == s
            self.writers[s].write_rows(rows[mine] - (self.offsets[s] - self.first), values[mine])

    def store(self) -> FactorStore:
        """Every row of the index (base shards and new ones), for the curvature."""
        parts: list[FactorStore] = [
            MmapFactorStore(self.layout, *_factors_at(self.out / b["file"]), self.dtype)
            for b in self.base
        ]
        for w in self.writers:
            parts.append(
                MmapFactorStore(self.layout, *_factors_at(w.final), self.dtype)
                if isinstance(w, _FinishedShard)
                else MemoryFactorStore(self.layout, w.factors, self.dtype)
            )
        return ShardedFactorStore(parts)

    def publish(
        self, manifest: dict[str, Any], curvature: Mapping[str, LayerCurvature], threads: int = 1
    ) -> str:
        """Finish the shards, write the basis, then replace ``manifest.json``; returns the
        fingerprint. Basis files no manifest names any more are removed."""
        shards = list(self.base)
        for j, w in enumerate(self.writers):
            digest = self.finished.get(j) or w.finish_shard(threads)
            shards.append(
                {"file": shard_name(len(self.base) + j), "rows": w.n, "fingerprint": digest}
            )
        basis, basis_digest = write_basis(self.out, curvature, self.projections)
        return publish_manifest(
            self.out,
            {**manifest, "n_examples": self.n, "shards": shards, "shard_size": self.shard_size},
            basis,
            basis_digest,
        )


def publish_manifest(out: Path, manifest: dict[str, Any], basis: str, basis_digest: str) -> str:
    """Replace ``out/manifest.json`` with ``manifest`` naming ``basis`` (atomically), end a
    build, and remove basis files that neither it nor the previous manifest names (a server
    may still be opening the previous one); returns the fingerprint."""
    manifest = {
        **manifest,
        "format": FORMAT_NAME,
        "format_version": DIR_FORMAT_VERSION,
        "basis": basis,
    }
    manifest["fingerprint"] = dir_fingerprint(manifest, basis_digest)
    target = out / MANIFEST
    previous = read_json(target).get("basis") if target.exists() else None
    write_json(target, manifest)
    (out / BUILDING).unlink(missing_ok=True)
    for stale in out.glob("basis-*.h5"):
        if stale.name not in (basis, previous):
            stale.unlink()
    return str(manifest["fingerprint"])


class _FinishedShard(IndexWriter):
    """A shard an earlier run finished: nothing pending, nothing to write."""

    def __init__(self, final: Path, manifest: dict[str, Any]):
        self.final, self.manifest, self.n = final, manifest, int(manifest["n_examples"])
        self.layout = FactorLayout.from_manifest(manifest)

    def pending(self) -> npt.NDArray[np.bool_]:
        return np.zeros(self.n, dtype=bool)


def _factors_at(path: Path) -> tuple[str, int, int]:
    with h5py.File(path, "r") as f:
        return str(path), int(f["factors"].id.get_offset()), int(f["factors"].shape[0])
