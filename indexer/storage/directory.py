"""Opening a sharded index (format 2): ``manifest.json``, the basis file and every shard, each
checked against what the manifest says of it (docs/index-format.md)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..curvature.base import Basis
from ..engine.layout import FactorLayout
from ..errors import IndexFormatError
from . import integrity
from .format import h5open
from .manifest import MANIFEST, Manifest
from .store import MmapFactorStore


@dataclass
class Part:
    """Rows [first, first + n) of an index and the HDF5 file that holds them."""

    file: h5py.File
    path: Path
    first: int
    n: int

    @property
    def offset(self) -> int:
        return int(self.file["factors"].id.get_offset())


def check_rows(f: h5py.File, path: Path, n: int, width: int) -> None:
    """Factors of shape (n, width) inside the file and every row computed."""
    if "factors" not in f or f["factors"].shape != (n, width):
        raise IndexFormatError(f"{path}: factor array missing or not of shape {(n, width)}")
    ds = f["factors"]
    offset = ds.id.get_offset()
    if offset is None or offset + ds.id.get_storage_size() > os.path.getsize(path):
        raise IndexFormatError(f"{path}: truncated (factor data extends past the end of file)")
    if not np.all(f["done"][()]):
        raise IndexFormatError(f"{path}: some factor rows were never computed")


def open_parts(path: Path, manifest: Manifest) -> tuple[h5py.File, list[Part]]:
    """The basis file and the shards ``manifest`` lists, validated (and the manifest against
    its fingerprint); every file is closed again on failure."""
    if manifest.basis is None or manifest.shards is None:
        raise IndexFormatError(f"{path}: corrupted manifest (no basis or no shards)")
    opened: list[h5py.File] = []
    try:
        basis = h5open(path / manifest.basis, "r")
        opened.append(basis)
        parts, first, width = [], 0, manifest.row_width
        for entry in manifest.shards:
            shard_path = path / entry.file
            f = h5open(shard_path, "r")
            opened.append(f)
            if f.attrs.get("status") != "shard" or f.attrs.get("fingerprint") != entry.fingerprint:
                raise IndexFormatError(f"{shard_path}: not the shard the manifest lists")
            check_rows(f, shard_path, entry.rows, width)
            parts.append(Part(f, shard_path, first, entry.rows))
            first += entry.rows
        if first != manifest.n_examples:
            raise IndexFormatError(
                f"{path}: the shards hold {first} rows, the manifest says {manifest.n_examples}"
            )
        if manifest.directory_fingerprint(integrity.basis_digest(basis)) != manifest.fingerprint:
            raise IndexFormatError(
                f"{path}: {MANIFEST} does not match its fingerprint (edited by hand or "
                "corrupted); publish it again with `lorif index curvature`, or restore it"
            )
        return basis, parts
    except BaseException:
        for f in opened:
            f.close()
        raise


def verify_parts(
    path: Path,
    manifest: bytes,
    basis: h5py.File,
    parts: list[Part],
    layout: FactorLayout,
    dtype: str,
    curvature: Basis,
    mode: integrity.VerifyMode,
    threads: int = 1,
) -> integrity.VerifyReport:
    """The basis, then every shard against its checksums (``integrity.verify`` for a
    directory); the content id covers ``manifest`` (as the index was opened) and every
    shard's rows as read."""
    t0 = time.perf_counter()
    if mode == "off":
        return integrity.VerifyReport(mode, 0, 0.0, "none")
    rows, checked = [], 0
    try:
        integrity.check_basis(basis, curvature)
        for p in parts:
            factors = MmapFactorStore(layout, str(p.path), p.offset, p.n, dtype).array
            try:
                rows.append(integrity.check_rows(p.file, factors, mode, threads))
            except IndexFormatError as e:
                raise IndexFormatError(f"{p.path.name}: {e}") from None
            checked += factors.nbytes if mode == "full" else 0
    except IndexFormatError as e:
        raise IndexFormatError(f"{path}: {e}") from None
    if mode == "fast":
        return integrity.VerifyReport(mode, 0, time.perf_counter() - t0, "checksums")
    content = integrity.content_id(manifest, rows, basis)
    return integrity.VerifyReport(mode, checked, time.perf_counter() - t0, "checksums", content)
