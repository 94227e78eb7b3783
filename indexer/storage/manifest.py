"""The manifest: what an index says about itself (docs/index-format.md, *Manifest*), typed.

This module is the only one that reads or writes manifest JSON: in a single-file index
(dataset ``manifest``), a shard file (the same, with ``shard``), a sharded index directory
(``manifest.json``) and a build in progress (``build.json``). Everything else uses the typed
``Manifest``. Keys this lorif does not know (an index from a newer one) are kept in ``extra``
and written back unchanged; the JSON of a manifest read and written again is the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from ..config import DEFAULT_SHARD_SIZE, BuildConfig
from ..curvature import DEFAULT_KIND
from ..engine.layout import FactorLayout, TrackedLayer
from ..errors import IndexFormatError
from .files import read_json, write_json
from .records import Record

FORMAT_NAME = "lorif-index"
FORMAT_VERSION = 1  # a single file (and each shard file)
DIR_FORMAT_VERSION = 2  # a directory of shards
MANIFEST = "manifest.json"
BUILDING = "build.json"  # the manifest a sharded build started with, until it publishes
GROWING = "growing.json"  # {"target_rows": M}: published as it grows, until it holds M rows
UNHASHED_KEYS = ("fingerprint", "build_info")  # not part of the content fingerprint
STR = h5py.string_dtype("utf-8")


@dataclass
class LayerRecord(Record):
    """One tracked layer: its shape, projection sizes and checksums, its row offset, and its
    rank c when a storage budget chose it per layer (None: the manifest's ``rank``)."""

    name: str
    in_dim: int
    out_dim: int
    d1: int
    d2: int
    proj_in_sha256: str
    proj_out_sha256: str
    offset: int
    rank: int | None = None

    @property
    def tracked(self) -> TrackedLayer:
        return TrackedLayer(self.name, self.in_dim, self.out_dim, self.d1, self.d2)


@dataclass
class CurvatureRecord(Record):
    """How the basis was computed: its kind and settings, lambda per layer, the rows it
    covers (None: every row, in indexes written before it was recorded)."""

    rank: int
    oversample: int
    power_iters: int
    damping: float
    damping_abs: float
    kind: str | None = None  # None: written before K-FAC existed (lowrank)
    rows: int | None = None
    lambdas: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "manifest") -> CurvatureRecord:
        d = dict(d)
        lambdas = d.pop("lambda", {})
        return dataclasses.replace(super().from_dict(d, where), lambdas=lambdas)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["lambda"] = out.pop("lambdas")
        return out

    @property
    def method_kind(self) -> str:
        return self.kind or DEFAULT_KIND

    @property
    def relative(self) -> bool:
        """lambda = alpha * a layer's mean eigenvalue (else absolute: --damping-abs)."""
        return not self.damping_abs


@dataclass
class TaskRecord(Record):
    """How examples became losses: ``kind`` (causal_lm, or what the Python API recorded), and
    for a causal LM its ``max_tokens`` (as used) and ``chat_template``."""

    kind: str | None = None
    max_tokens: int | None = None
    chat_template: bool | None = None


@dataclass
class ShardEntry(Record):
    file: str  # relative to the index directory
    rows: int
    fingerprint: str


@dataclass
class Manifest(Record):
    """Everything an index file or directory records about itself (docs/index-format.md)."""

    n_examples: int
    rank: int
    storage_dtype: str
    row_width: int
    layers: list[LayerRecord]
    projection: dict[str, Any]  # generator and seed of the projections
    model: dict[str, Any]  # what the model was (spec, path, class, weight fingerprint)
    task: TaskRecord
    build_config: dict[str, Any]  # BuildConfig.content_dict() of the build
    software: dict[str, Any]
    format_version: int = FORMAT_VERSION
    format: str | None = None  # a directory's format marker (a file's is an HDF5 attribute)
    curvature: CurvatureRecord | None = None  # absent until the basis is computed
    build_info: dict[str, Any] | None = None  # timings, device, threads (not hashed)
    fingerprint: str | None = None
    basis: str | None = None  # a directory: the basis file's name
    shards: list[ShardEntry] | None = None  # a directory: its shards in row order
    shard_size: int | None = None  # a sharded index: rows per new shard
    shard: dict[str, Any] | None = None  # a shard file: {"first_id": its first row's id}

    @classmethod
    def _decode(cls, key: str, value: Any) -> Any:
        if key == "layers":
            return [LayerRecord.from_dict(v, "manifest layer") for v in value]
        if key == "shards":
            return [ShardEntry.from_dict(v, "manifest shard entry") for v in value]
        if key == "curvature":
            return CurvatureRecord.from_dict(value, "manifest curvature")
        if key == "task":
            return TaskRecord.from_dict(value, "manifest task")
        return value

    def config(self) -> BuildConfig:
        """The content settings the index was built with."""
        return BuildConfig.from_dict(self.build_config)

    def config_differences(self, content: Mapping[str, Any]) -> list[str]:
        """The build settings (``BuildConfig.content_dict()``) that differ from the index's (a
        setting newer than the index counts at its default)."""
        recorded = {**self.config().content_dict(), **self.build_config}
        return sorted(k for k, v in content.items() if recorded.get(k) != v)

    @property
    def model_fingerprint(self) -> str | None:
        """The weights' fingerprint recorded at build time (None: none recorded)."""
        value = self.model.get("fingerprint")
        return None if value is None else str(value)

    @property
    def model_spec(self) -> str:
        """The model to load: where it was at build time, else the spec as given."""
        return str(self.model.get("path") or self.model["spec"])

    @property
    def layout(self) -> FactorLayout:
        ranks = tuple(t.rank or self.rank for t in self.layers)
        return FactorLayout(tuple(t.tracked for t in self.layers), ranks)

    @property
    def curvature_kind(self) -> str:
        """lowrank | kfac | ekfac ... (indexes before K-FAC: lowrank)."""
        return self.curvature.method_kind if self.curvature else DEFAULT_KIND

    @property
    def rows_per_shard(self) -> int:
        """Rows of each new shard of a sharded index."""
        return self.shard_size or DEFAULT_SHARD_SIZE

    @property
    def projection_seed(self) -> int:
        return int(self.projection["seed"])

    @property
    def checksums(self) -> dict[str, tuple[str, str]]:
        """The projections' sha256 per layer (in, out)."""
        return {t.name: (t.proj_in_sha256, t.proj_out_sha256) for t in self.layers}

    def model_summary(self) -> dict[str, Any]:
        """The model entry without paths of the build host (a spec that is a path is reduced
        to its last component)."""
        keys = ("spec", "name", "class", "fingerprint")
        out: dict[str, Any] = {k: self.model[k] for k in keys if k in self.model}
        if "/" in str(out.get("spec", "")):
            out["spec"] = Path(out["spec"]).name
        return out

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)

    def hashed(self) -> dict[str, Any]:
        """The JSON object the content fingerprint covers (less fingerprint and build info)."""
        return {k: v for k, v in self.to_dict().items() if k not in UNHASHED_KEYS}

    def directory_fingerprint(self, basis_digest: str) -> str:
        """A sharded index's fingerprint: blake2b-128 over this manifest (less fingerprint
        and build_info; it lists every shard's fingerprint) and the basis file's checksums
        (``basis_digest``, hex)."""
        h = hashlib.blake2b(json.dumps(self.hashed(), sort_keys=True).encode(), digest_size=16)
        h.update(bytes.fromhex(basis_digest))
        return h.hexdigest()

    def differences(self, other: Manifest, keys: Iterable[str]) -> list[str]:
        """The ``keys`` whose values differ between the two manifests."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in keys if mine.get(k) != theirs.get(k)]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def read_manifest_file(path: Path) -> Manifest:
    """A manifest JSON file (``manifest.json``, ``build.json``)."""
    try:
        return Manifest.from_dict(read_json(path))
    except IndexFormatError as e:
        raise IndexFormatError(f"{path}: {e}") from None


def write_manifest_file(path: Path, manifest: Manifest) -> None:
    write_json(path, manifest.to_dict())


def read_dir_manifest(path: Path) -> Manifest:
    """The manifest of a sharded index directory (else IndexFormatError, naming why)."""
    if not (path / MANIFEST).exists():
        if (path / BUILDING).exists():
            raise IndexFormatError(
                f"{path}: an unfinished build, not an index (rerun `lorif index build` with the "
                "same settings to resume)"
            )
        raise IndexFormatError(f"{path} is a directory, not an index (no {MANIFEST})")
    raw = read_json(path / MANIFEST)
    if raw.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path}: not a LoRIF index (no '{FORMAT_NAME}' format marker)")
    if raw.get("format_version") != DIR_FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {raw.get('format_version')} is not supported "
            f"(this lorif reads directories of version {DIR_FORMAT_VERSION})"
        )
    try:
        return Manifest.from_dict(raw)
    except IndexFormatError as e:
        raise IndexFormatError(f"{path}: {e}") from None


def read_h5_manifest(f: h5py.File, path: Path) -> Manifest:
    """The manifest of a LoRIF index file of this format version (else IndexFormatError)."""
    if f.attrs.get("format") != FORMAT_NAME or "manifest" not in f:
        raise IndexFormatError(f"{path}: not a LoRIF index (no '{FORMAT_NAME}' format marker)")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {version} is not supported "
            f"(this lorif reads version {FORMAT_VERSION})"
        )
    raw = f["manifest"][()]
    try:
        return Manifest.from_dict(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
    except (ValueError, KeyError, IndexFormatError) as e:
        raise IndexFormatError(f"{path}: corrupted manifest ({e})") from None


def write_h5_manifest(f: h5py.File, manifest: Manifest) -> None:
    if "manifest" in f:
        del f["manifest"]
    f.create_dataset("manifest", data=manifest.to_json(), dtype=STR)
