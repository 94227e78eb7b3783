"""The on-disk index: one HDF5 file (see docs/index-format.md for the contract).

Writer: preallocates every array, streams factor rows through a memory map with a per-row done
mask (a killed build resumes), then writes the curvature basis, a fingerprint and publishes the
file by atomic rename. Reader: validates the file and exposes the factor store (memory-mapped),
the curvature basis, the projections and the example texts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from . import FORMAT_VERSION
from .capture import TrackedLayer
from .data import Example
from .errors import IndexFormatError
from .store import NUMPY_STORAGE, FactorLayout, FactorStore, MmapFactorStore

FORMAT_NAME = "lorif-index"
PAGE = 4096
PARTIAL_SUFFIX = ".partial"
UNHASHED_KEYS = ("fingerprint", "build_info")
_STR = h5py.string_dtype("utf-8")


def partial_path(path: str | Path) -> Path:
    return Path(str(path) + PARTIAL_SUFFIX)


def layout_from_manifest(manifest: dict[str, Any]) -> FactorLayout:
    layers = tuple(TrackedLayer(d["name"], d["in_dim"], d["out_dim"], d["d1"], d["d2"])
                   for d in manifest["layers"])
    return FactorLayout(layers, manifest["rank"])


def _h5open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise IndexFormatError(f"{path}: not a readable index file (truncated or corrupted: "
                               f"{str(e).splitlines()[0]})") from None


def _read_manifest(f: h5py.File, path: Path) -> dict[str, Any]:
    if f.attrs.get("format") != FORMAT_NAME or "manifest" not in f:
        raise IndexFormatError(f"{path}: not a LoRIF index (no '{FORMAT_NAME}' format marker)")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: index format version {version} is not supported "
                               f"(this lorif reads version {FORMAT_VERSION})")
    raw = f["manifest"][()]
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, KeyError) as e:
        raise IndexFormatError(f"{path}: corrupted manifest ({e})") from None


def _write_manifest(f: h5py.File, manifest: dict[str, Any]) -> None:
    if "manifest" in f:
        del f["manifest"]
    f.create_dataset("manifest", data=json.dumps(manifest, sort_keys=True), dtype=_STR)


def _contiguous(f: h5py.File, name: str, shape: tuple[int, ...], dtype: np.dtype) -> h5py.Dataset:
    """Uncompressed contiguous dataset allocated now (so it has a file offset to memory-map)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    space = h5py.h5s.create_simple(shape)
    dsid = h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)), space,
                           dcpl=dcpl)
    return h5py.Dataset(dsid)


def fingerprint(manifest: dict[str, Any], factors: np.ndarray,
                curvature: dict[str, dict[str, np.ndarray]]) -> str:
    """blake2b-128 over the manifest (less 'fingerprint' and 'build_info': timings and dates),
    the factor bytes and the basis arrays (V as <f4, sigma2 and lambda as <f8)."""
    h = hashlib.blake2b(digest_size=16)
    body = {k: v for k, v in manifest.items() if k not in UNHASHED_KEYS}
    h.update(json.dumps(body, sort_keys=True).encode())
    step = max(1, (64 << 20) // max(1, factors.shape[1] * factors.itemsize))
    for start in range(0, factors.shape[0], step):
        h.update(np.ascontiguousarray(factors[start : start + step]).tobytes())
    for name in sorted(curvature):
        for key, dtype in (("V", "<f4"), ("sigma2", "<f8"), ("lambda", "<f8")):
            h.update(np.ascontiguousarray(curvature[name][key], dtype=dtype).tobytes())
    return h.hexdigest()


class IndexWriter:
    """A partial index file being filled; ``publish`` turns it into the finished index."""

    def __init__(self, final: Path, manifest: dict[str, Any]):
        self.final = Path(final)
        self.path = partial_path(final)
        self.manifest = manifest
        self.layout = layout_from_manifest(manifest)
        self.n = int(manifest["n_examples"])
        with _h5open(self.path, "r") as f:
            off_f, off_d = f["factors"].id.get_offset(), f["done"].id.get_offset()
        dtype = NUMPY_STORAGE[manifest["storage_dtype"]]
        self.factors = np.memmap(self.path, dtype=dtype, mode="r+", offset=off_f,
                                 shape=(self.n, self.layout.width))
        self.done = np.memmap(self.path, dtype=np.uint8, mode="r+", offset=off_d, shape=(self.n,))

    @classmethod
    def create(cls, final: str | Path, manifest: dict[str, Any], examples: list[Example],
               n_tokens: np.ndarray, projections: dict[str, tuple[np.ndarray, np.ndarray]] | None
               ) -> "IndexWriter":
        """Preallocate the partial file with everything known before featurization."""
        path = partial_path(final)
        layout = layout_from_manifest(manifest)
        n = len(examples)
        with h5py.File(path, "w", alignment_threshold=1, alignment_interval=PAGE) as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["status"] = "building"
            _write_manifest(f, manifest)
            _contiguous(f, "factors", (n, layout.width), NUMPY_STORAGE[manifest["storage_dtype"]])
            _contiguous(f, "done", (n,), np.dtype(np.uint8))
            g = f.create_group("examples")
            g.create_dataset("prompt", data=[e.prompt for e in examples], dtype=_STR)
            g.create_dataset("completion", data=[e.completion for e in examples], dtype=_STR)
            g.create_dataset("meta", data=[json.dumps(e.meta, ensure_ascii=False, default=str)
                                           for e in examples], dtype=_STR)
            g.create_dataset("n_tokens", data=np.asarray(n_tokens, dtype=np.int32))
            if projections:
                for name, (p_in, p_out) in projections.items():
                    pg = f.create_group(f"projections/{name}")
                    pg.create_dataset("in", data=p_in.astype("<f4"))
                    pg.create_dataset("out", data=p_out.astype("<f4"))
            f.flush()
        return cls(Path(final), manifest)

    @classmethod
    def resume(cls, final: str | Path) -> tuple["IndexWriter", dict[str, Any]]:
        """Reopen an existing partial file; returns the writer and the manifest it was begun with."""
        path = partial_path(final)
        with _h5open(path, "r") as f:
            manifest = _read_manifest(f, path)
            if "factors" not in f or "done" not in f:
                raise IndexFormatError(f"{path}: partial build without factor storage")
        return cls(Path(final), manifest), manifest

    def pending(self) -> np.ndarray:
        """Bool (N,): rows still to compute."""
        return np.asarray(self.done) == 0

    def write_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Store encoded rows, make them durable, then mark them done (in that order)."""
        order = np.argsort(rows)
        self.factors[rows[order]] = values[order]
        self.factors.flush()
        self.done[rows] = 1
        self.done.flush()

    def publish(self, manifest: dict[str, Any], curvature: dict[str, dict[str, np.ndarray]]
                ) -> str:
        """Write basis + final manifest + fingerprint, then atomically rename into place."""
        if not np.all(self.done):
            raise IndexFormatError("cannot publish: some rows are not computed")
        manifest = dict(manifest)
        digest = fingerprint(manifest, self.factors, curvature)
        manifest["fingerprint"] = digest
        del self.factors, self.done  # release the maps before h5py rewrites metadata
        with h5py.File(self.path, "r+") as f:
            if "curvature" in f:
                del f["curvature"]
            for name, arrays in curvature.items():
                g = f.create_group(f"curvature/{name}")
                g.create_dataset("V", data=arrays["V"].astype("<f4"))
                g.create_dataset("sigma2", data=arrays["sigma2"].astype("<f8"))
                g.attrs["lambda"] = float(arrays["lambda"])
            _write_manifest(f, manifest)
            f.attrs["fingerprint"] = digest
            f.attrs["status"] = "complete"
        with open(self.path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.path, self.final)
        dir_fd = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return digest


@dataclass
class Curvature:
    V: np.ndarray  # (D, r) float32, columns orthonormal
    sigma2: np.ndarray  # (r,) float64, descending
    lam: float


class Index:
    """A finished index opened read-only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(self.path).endswith(PARTIAL_SUFFIX):
            raise IndexFormatError(f"{self.path}: an unfinished build, not an index "
                                   "(rerun `lorif index build` with the same settings to resume)")
        if not self.path.exists():
            raise IndexFormatError(f"index not found: {self.path}")
        self.file = _h5open(self.path, "r")
        try:
            self.manifest = _read_manifest(self.file, self.path)
            self._validate()
        except Exception:
            self.file.close()
            raise
        self.layout = layout_from_manifest(self.manifest)
        self.dtype: str = self.manifest["storage_dtype"]
        self.fingerprint: str = self.manifest["fingerprint"]

    def _validate(self) -> None:
        f, m, p = self.file, self.manifest, self.path
        if f.attrs.get("status") != "complete" or "fingerprint" not in m:
            raise IndexFormatError(f"{p}: the build did not complete")
        layout = layout_from_manifest(m)
        shape = (int(m["n_examples"]), layout.width)
        if "factors" not in f or f["factors"].shape != shape:
            raise IndexFormatError(f"{p}: factor array missing or not of shape {shape}")
        ds = f["factors"]
        offset = ds.id.get_offset()
        if offset is None or offset + ds.id.get_storage_size() > os.path.getsize(p):
            raise IndexFormatError(f"{p}: truncated (factor data extends past the end of file)")
        if not np.all(f["done"][()]):
            raise IndexFormatError(f"{p}: some factor rows were never computed")
        for t in layout.layers:
            if f"curvature/{t.name}/V" not in f:
                raise IndexFormatError(f"{p}: no curvature basis for layer {t.name}")

    def __len__(self) -> int:
        return int(self.manifest["n_examples"])

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def bytes_per_example(self) -> tuple[int, int]:
        """(LoRIF factor bytes c * sum(d1 + d2), dense LoGRA-style bytes sum(d1 * d2)) per
        example, in the storage dtype."""
        value = NUMPY_STORAGE[self.dtype].itemsize
        layers = self.manifest["layers"]
        return (self.manifest["rank"] * sum(d["d1"] + d["d2"] for d in layers) * value,
                sum(d["d1"] * d["d2"] for d in layers) * value)

    def store(self) -> FactorStore:
        offset = self.file["factors"].id.get_offset()
        return MmapFactorStore(self.layout, str(self.path), offset, len(self), self.dtype)

    def curvature(self) -> dict[str, Curvature]:
        out = {}
        for t in self.layout.layers:
            g = self.file[f"curvature/{t.name}"]
            out[t.name] = Curvature(g["V"][()], g["sigma2"][()], float(g.attrs["lambda"]))
        return out

    def stored_projections(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        if "projections" not in self.file:
            return None
        return {t.name: (self.file[f"projections/{t.name}/in"][()],
                         self.file[f"projections/{t.name}/out"][()]) for t in self.layout.layers}

    def example(self, i: int) -> Example:
        return self.examples_at([i])[0]

    def examples_at(self, ids: list[int]) -> list[Example]:
        """Several examples with one read per field (ids in any order, repeats allowed)."""
        if not ids:
            return []
        uniq = sorted(set(int(i) for i in ids))
        if uniq[0] < 0 or uniq[-1] >= len(self):
            raise IndexError(f"example ids must be in [0, {len(self)}), got {uniq[0]}..{uniq[-1]}")
        g = self.file["examples"]
        fields = {f: g[f].asstr()[uniq] for f in ("prompt", "completion", "meta")}
        at = {i: Example(completion=c, prompt=p, meta=json.loads(m)) for i, p, c, m in
              zip(uniq, fields["prompt"], fields["completion"], fields["meta"])}
        return [at[int(i)] for i in ids]

    def examples(self) -> Iterator[Example]:
        for i in range(len(self)):
            yield self.example(i)

    def verify(self) -> None:
        """Recompute the fingerprint over all stored bytes (reads the whole file)."""
        factors = self.store().array  # type: ignore[attr-defined]
        curv = {n: {"V": c.V, "sigma2": c.sigma2, "lambda": c.lam}
                for n, c in self.curvature().items()}
        if fingerprint(self.manifest, factors, curv) != self.fingerprint:
            raise IndexFormatError(f"{self.path}: content does not match its fingerprint "
                                   "(the file is corrupted)")
