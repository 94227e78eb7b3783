"""The index file's fixed parts (docs/index-format.md): the content fingerprint, the curvature
group, and HDF5 helpers shared by the writer and the reader."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from ..curvature import method
from ..curvature.base import Basis
from ..errors import ConfigError, IndexFormatError
from .manifest import Manifest

PAGE = 4096
PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | Path) -> Path:
    """Where the build of ``path`` writes until it publishes."""
    return Path(str(path) + PARTIAL_SUFFIX)


def verbatim_path(index_path: str | Path) -> Path:
    """Where the verbatim phrase table of the index at ``index_path`` lives."""
    p = Path(index_path)
    return p / "verbatim.sqlite" if p.is_dir() else p.with_name(p.name + ".verbatim.sqlite")


def h5open(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file; any failure is an IndexFormatError naming the file."""
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise IndexFormatError(
            f"{path}: not a readable index file (truncated or corrupted: {str(e).splitlines()[0]})"
        ) from None


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
    manifest: Manifest,
    factors: npt.NDArray[np.generic],
    curvature: Basis,
) -> str:
    """blake2b-128 over the manifest (less 'fingerprint' and 'build_info': timings and dates),
    the factor bytes and the basis arrays (as stored, then lambda as <f8)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(manifest.hashed(), sort_keys=True).encode())
    step = max(1, (64 << 20) // max(1, factors.shape[1] * factors.itemsize))
    for start in range(0, factors.shape[0], step):
        h.update(np.ascontiguousarray(factors[start : start + step]).tobytes())
    for chunk in curvature_bytes(curvature):
        h.update(chunk)
    return h.hexdigest()


def curvature_bytes(curvature: Basis) -> Iterator[bytes]:
    """The bytes the checksums cover: per layer (by name) its stored arrays, then lambda."""
    for name in sorted(curvature):
        c = curvature[name]
        for array in c.arrays().values():
            yield np.ascontiguousarray(array).tobytes()
        yield np.float64(c.lam).astype("<f8").tobytes()


def write_curvature(f: h5py.File, curvature: Basis) -> None:
    """Group ``curvature/<layer>``: each layer as its method writes it."""
    if "curvature" in f:
        del f["curvature"]
    for name, c in curvature.items():
        curvature.method.write(f.create_group(f"curvature/{name}"), c)


def read_curvature(f: h5py.File, path: Path, kind: str, layers: Iterable[str]) -> Basis:
    """The curvature of ``layers`` (of ``kind``, as the manifest says) stored in ``f``."""
    try:
        reader = method(kind)
    except ConfigError as e:
        raise IndexFormatError(f"{path}: {e}; this lorif cannot read it") from None
    out = {}
    for name in layers:
        layer = reader.read(f.get(f"curvature/{name}"))
        if layer is None:
            raise IndexFormatError(f"{path}: no {kind} curvature basis for layer {name}")
        out[name] = layer
    return Basis(kind, out)
