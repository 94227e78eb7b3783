"""The index file's fixed parts (docs/index-format.md): names, the manifest, the content
fingerprint, and HDF5 helpers shared by the writer and the reader."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from ..engine.preconditioners import Curvature, from_arrays, stored_arrays
from ..errors import IndexFormatError

FORMAT_NAME = "lorif-index"
FORMAT_VERSION = 1
PAGE = 4096
PARTIAL_SUFFIX = ".partial"
UNHASHED_KEYS = ("fingerprint", "build_info")
STR = h5py.string_dtype("utf-8")


def partial_path(path: str | Path) -> Path:
    """Where the build of ``path`` writes until it publishes."""
    return Path(str(path) + PARTIAL_SUFFIX)


def h5open(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file; any failure is an IndexFormatError naming the file."""
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise IndexFormatError(
            f"{path}: not a readable index file (truncated or corrupted: {str(e).splitlines()[0]})"
        ) from None


def read_manifest(f: h5py.File, path: Path) -> dict[str, Any]:
    """The manifest of a LoRIF index of this format version (else IndexFormatError)."""
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
        manifest = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, KeyError) as e:
        raise IndexFormatError(f"{path}: corrupted manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{path}: corrupted manifest (not a JSON object)")
    return manifest


def write_manifest(f: h5py.File, manifest: Mapping[str, Any]) -> None:
    if "manifest" in f:
        del f["manifest"]
    f.create_dataset("manifest", data=json.dumps(manifest, sort_keys=True), dtype=STR)


def contiguous(
    f: h5py.File, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> h5py.Dataset:
    """Uncompressed contiguous dataset allocated now (so it has a file offset to memory-map)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    space = h5py.h5s.create_simple(shape)
    dsid = h5py.h5d.create(
        f.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl
    )
    return h5py.Dataset(dsid)


def fingerprint(
    manifest: Mapping[str, Any],
    factors: npt.NDArray[np.generic],
    curvature: Mapping[str, Curvature],
) -> str:
    """blake2b-128 over the manifest (less 'fingerprint' and 'build_info': timings and dates),
    the factor bytes and the basis arrays (as stored, then lambda as <f8)."""
    h = hashlib.blake2b(digest_size=16)
    body = {k: v for k, v in manifest.items() if k not in UNHASHED_KEYS}
    h.update(json.dumps(body, sort_keys=True).encode())
    step = max(1, (64 << 20) // max(1, factors.shape[1] * factors.itemsize))
    for start in range(0, factors.shape[0], step):
        h.update(np.ascontiguousarray(factors[start : start + step]).tobytes())
    for chunk in curvature_bytes(curvature):
        h.update(chunk)
    return h.hexdigest()


def curvature_bytes(curvature: Mapping[str, Curvature]) -> Iterator[bytes]:
    """The bytes the checksums cover: per layer (by name) its stored arrays, then lambda."""
    for name in sorted(curvature):
        c = curvature[name]
        for array in c.arrays().values():
            yield np.ascontiguousarray(array).tobytes()
        yield np.float64(c.lam).astype("<f8").tobytes()


def write_curvature(f: h5py.File, curvature: Mapping[str, Curvature]) -> None:
    """Group ``curvature/<layer>``: the layer's arrays and attribute ``lambda``."""
    if "curvature" in f:
        del f["curvature"]
    for name, c in curvature.items():
        g = f.create_group(f"curvature/{name}")
        for key, array in c.arrays().items():
            g.create_dataset(key, data=array)
        g.attrs["lambda"] = float(c.lam)


def read_curvature(
    f: h5py.File, path: Path, kind: str, layers: Iterable[str]
) -> dict[str, Curvature]:
    """The curvature of ``layers`` (of ``kind``, as the manifest says) stored in ``f``."""
    out = {}
    for name in layers:
        g = f.get(f"curvature/{name}")
        keys = stored_arrays(kind)
        if g is None or any(k not in g for k in keys) or "lambda" not in g.attrs:
            raise IndexFormatError(f"{path}: no {kind} curvature basis for layer {name}")
        out[name] = from_arrays(kind, {k: g[k][()] for k in keys}, float(g.attrs["lambda"]))
    return out


def curvature_kind(manifest: Mapping[str, Any]) -> str:
    """The preconditioner an index was built with (indexes before K-FAC: lowrank)."""
    return str(manifest.get("curvature", {}).get("kind", "lowrank"))
