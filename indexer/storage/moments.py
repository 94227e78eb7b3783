"""K-FAC moments in shard files: each finished shard of a Kronecker build (``--curvature kfac |
ekfac``) keeps the token-level sums A, S of its own rows (group ``moments``, float64, with a
blake2b-128 checksum), so a resumed or grown index sums them without running the model again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import torch

from ..engine.kronecker import KroneckerMoments
from ..errors import IndexFormatError


def _digest(g: h5py.Group | dict[str, dict[str, np.ndarray]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(g):
        for side in ("A", "S"):
            h.update(name.encode())
            h.update(np.ascontiguousarray(g[name][side][()], dtype="<f8").tobytes())
    return h.hexdigest()


def write_moments(f: h5py.File, moments: KroneckerMoments) -> None:
    """Group ``moments/<layer>/{A, S}`` of a shard file and its checksum."""
    arrays = {
        n: {"A": moments.A[n].cpu().numpy(), "S": moments.S[n].cpu().numpy()} for n in moments.A
    }
    g = f.create_group("moments")
    for name, sides in arrays.items():
        for side, value in sides.items():
            g.create_dataset(f"{name}/{side}", data=value.astype("<f8"))
    g.attrs["checksum"] = _digest(g)


def read_moments(paths: Iterable[Path]) -> KroneckerMoments:
    """The sum of the moments the shard files at ``paths`` hold (IndexFormatError if one has
    none, e.g. a shard of a low-rank build, or they fail their checksum)."""
    total = KroneckerMoments()
    for path in paths:
        with h5py.File(path, "r") as f:
            g = f.get("moments")
            if g is None:
                raise IndexFormatError(
                    f"{path}: no K-FAC moments (a shard built with --curvature lowrank)"
                )
            if g.attrs.get("checksum") != _digest(g):
                raise IndexFormatError(f"{path}: the K-FAC moments do not match their checksum")
            part = KroneckerMoments(
                {n: torch.from_numpy(g[n]["A"][()]) for n in g},
                {n: torch.from_numpy(g[n]["S"][()]) for n in g},
            )
        total.merge(part)
    return total
