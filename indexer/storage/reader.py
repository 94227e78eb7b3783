"""A finished index opened read-only: validated on open, factors memory-mapped, the curvature
basis, the projections and the training examples read on demand."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..curvature.base import Basis
from ..data import Example
from ..engine.kronecker import KroneckerMoments
from ..engine.projection import Projections
from ..errors import IndexFormatError
from . import integrity
from .codec import NUMPY_STORAGE
from .concat import ShardedFactorStore
from .directory import Part, check_rows, open_parts, verify_parts
from .files import read_json
from .format import PARTIAL_SUFFIX, fingerprint, h5open, read_curvature, verbatim_path
from .manifest import (
    GROWING,
    MANIFEST,
    CurvatureRecord,
    Manifest,
    read_dir_manifest,
    read_h5_manifest,
)
from .metadata import MetaTable
from .moments import read_moments
from .store import FactorStore, MmapFactorStore
from .summary import index_summary


def parse_meta(raw: str) -> dict[str, Any]:
    """An example's metadata; text that is not a JSON object (a damaged or hand-edited file)
    is kept as it is under ``_unparsed`` rather than failing the read."""
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    return meta if isinstance(meta, dict) else {"_unparsed": raw}


class Index:
    """A finished index opened read-only: one file (format 1) or a directory of shards
    (format 2); example ids are global either way."""

    def __init__(self, path: str | Path, manifest: Manifest | None = None):
        """Open the index published at ``path``; a sharded one's ``manifest``: open that
        version (an earlier manifest whose files are still there) instead of the current."""
        self.path = Path(path)
        self._meta_table: MetaTable | None = None
        if str(self.path).endswith(PARTIAL_SUFFIX):
            raise IndexFormatError(
                f"{self.path}: an unfinished build, not an index "
                "(rerun `lorif index build` with the same settings to resume)"
            )
        if not self.path.exists():
            raise IndexFormatError(f"index not found: {self.path}")
        if not os.access(self.path, os.R_OK):
            raise IndexFormatError(f"{self.path}: permission denied (the index must be readable)")
        self.sharded = self.path.is_dir()
        self.manifest: Manifest
        if self.sharded:
            self.manifest = manifest or read_dir_manifest(self.path)
            # file: the basis (curvature, projections); parts: the shards
            self.file, self.parts = open_parts(self.path, self.manifest)
        else:
            self.file = h5open(self.path, "r")
            try:
                self.manifest = read_h5_manifest(self.file, self.path)
                self._validate()
            except Exception:
                self.file.close()
                raise
            self.parts = [Part(self.file, self.path, 0, self.manifest.n_examples)]
        self.layout = self.manifest.layout
        self.dtype: str = self.manifest.storage_dtype
        self.fingerprint: str = self.manifest.fingerprint or ""

    def _validate(self) -> None:
        f, m, p = self.file, self.manifest, self.path
        if f.attrs.get("status") == "shard":
            raise IndexFormatError(f"{p}: one shard of a sharded index (open its directory)")
        if f.attrs.get("status") != "complete" or m.fingerprint is None:
            raise IndexFormatError(f"{p}: the build did not complete")
        check_rows(f, p, m.n_examples, m.layout.width)
        integrity.check_manifest(f, p, m.hashed(), m.fingerprint)
        read_curvature(f, p, m.curvature_kind, [t.name for t in m.layers])

    def __len__(self) -> int:
        return self.manifest.n_examples

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for part in self.parts:
            part.file.close()
        self.file.close()

    def disk_bytes(self) -> int:
        """Bytes of the index's files (a sharded index: manifest, basis and shards)."""
        if not self.sharded:
            return os.path.getsize(self.path)
        files = [self.path / MANIFEST, self.path / str(self.manifest.basis)]
        return sum(os.path.getsize(f) for f in files) + sum(
            os.path.getsize(p.path) for p in self.parts
        )

    def bytes_per_example(self) -> tuple[int, int]:
        """(LoRIF factor bytes sum(c (d1 + d2)), dense LoGRA-style bytes sum(d1 * d2)) per
        example, in the storage dtype."""
        value = NUMPY_STORAGE[self.dtype].itemsize
        return self.layout.width * value, sum(t.d1 * t.d2 for t in self.manifest.layers) * value

    @property
    def row_bytes(self) -> int:
        """Bytes of one stored row (every layer's factors of one example)."""
        return self.layout.width * NUMPY_STORAGE[self.dtype].itemsize

    @property
    def curvature_record(self) -> CurvatureRecord:
        """How the basis was computed (kind, settings, lambda per layer, rows covered)."""
        if self.manifest.curvature is None:  # a finished index always records it
            raise IndexFormatError(f"{self.path}: corrupted manifest (no curvature)")
        return self.manifest.curvature

    @property
    def part_fingerprints(self) -> list[str]:
        """Each shard's fingerprint in row order (a single file: its own)."""
        if self.manifest.shards is None:
            return [self.fingerprint]
        return [s.fingerprint for s in self.manifest.shards]

    @property
    def verbatim_path(self) -> Path:
        """Where the index's verbatim phrase table is (or would be) written."""
        return verbatim_path(self.path)

    @property
    def target_rows(self) -> int | None:
        """The rows a build that publishes as it goes is growing this index to (its
        ``growing.json``); None when it is not growing."""
        marker = self.path / GROWING
        if not self.sharded or not marker.exists():
            return None
        try:
            target = read_json(marker).get("target_rows")
        except IndexFormatError:
            return None
        return target if isinstance(target, int) and target > len(self) else None

    @property
    def curvature_rows(self) -> int:
        """Rows the curvature basis was computed over (fewer after `index add --no-curvature`)."""
        rows = self.curvature_record.rows
        return len(self) if rows is None else rows

    def summary(self) -> dict[str, Any]:
        """What `lorif index info` prints and `GET /v1/index` returns (no host paths)."""
        return index_summary(self)

    def store(self, shards: range | None = None) -> FactorStore:
        """Every factor row, memory-mapped (shard after shard for a sharded index); or those
        of ``shards`` (consecutive: rows from ``self.parts[shards.start].first`` on)."""
        parts = self.parts if shards is None else self.parts[shards.start : shards.stop]
        stores = [
            MmapFactorStore(self.layout, str(p.path), p.offset, p.n, self.dtype) for p in parts
        ]
        return stores[0] if len(stores) == 1 else ShardedFactorStore(stores)

    def moments(self) -> KroneckerMoments:
        """The K-FAC moments of every row (a Kronecker build's shards keep them)."""
        return read_moments(p.path for p in self.parts)

    @property
    def curvature_kind(self) -> str:
        """A registered curvature method (lowrank | kfac | ekfac; method.md section 3)."""
        return self.manifest.curvature_kind

    def curvature(self) -> Basis:
        """Every layer's curvature basis, as stored (float32 / float64 numpy arrays)."""
        names = [t.name for t in self.layout.layers]
        return read_curvature(self.file, self.path, self.curvature_kind, names)

    def stored_projections(self) -> Projections | None:
        if "projections" not in self.file:
            return None
        return {
            t.name: (
                self.file[f"projections/{t.name}/in"][()],
                self.file[f"projections/{t.name}/out"][()],
            )
            for t in self.layout.layers
        }

    def example(self, i: int) -> Example:
        return self.examples_at([i])[0]

    def examples_at(self, ids: Sequence[int]) -> list[Example]:
        """Several examples with one read per field and shard (ids in any order, repeats
        allowed)."""
        if not ids:
            return []
        uniq = np.array(sorted({int(i) for i in ids}), dtype=np.int64)
        if uniq[0] < 0 or uniq[-1] >= len(self):
            raise IndexError(f"example ids must be in [0, {len(self)}), got {uniq[0]}..{uniq[-1]}")
        at: dict[int, Example] = {}
        for part in self.parts:
            mine = uniq[(uniq >= part.first) & (uniq < part.first + part.n)]
            if not len(mine):
                continue
            g = part.file["examples"]
            local = mine - part.first
            fields = [g[f].asstr(errors="replace")[local] for f in ("prompt", "completion", "meta")]
            for i, p, c, m in zip(mine, *fields, strict=True):
                at[int(i)] = Example(completion=c, prompt=p, meta=parse_meta(m))
        return [at[int(i)] for i in ids]

    def shard_groups(self, n: int) -> list[range]:
        """The shards split into at most ``n`` consecutive groups of about equal rows (what
        one scorer each serves when the scan is spread over several)."""
        rows = np.cumsum([p.n for p in self.parts])
        cuts = [int(np.searchsorted(rows, len(self) * g / n, side="left")) for g in range(1, n)]
        bounds = sorted({0, *(c + 1 for c in cuts if c + 1 < len(self.parts)), len(self.parts)})
        return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]

    def column(self, field: str) -> list[str]:
        """Every example's ``prompt``, ``completion`` or ``meta`` (raw JSON), in id order."""
        return [t for p in self.parts for t in p.file[f"examples/{field}"].asstr()[()]]

    @property
    def meta_table(self) -> MetaTable:
        """Every example's metadata, parsed on first use (totals by a key, context)."""
        if self._meta_table is None:
            self._meta_table = MetaTable([parse_meta(m) for m in self.column("meta")])
        return self._meta_table

    def n_tokens(self, i: int) -> int:
        """Tokens of example ``i`` as indexed (after truncation to the build's max_tokens)."""
        part = next(p for p in self.parts if p.first <= i < p.first + p.n)
        return int(part.file["examples/n_tokens"][i - part.first])

    def verify(
        self, mode: integrity.VerifyMode = "full", threads: int = 1
    ) -> integrity.VerifyReport:
        """Check the stored bytes against the checksums written at build time (see
        storage/integrity.py); IndexFormatError names what is corrupted. A file without
        checksums (built before they existed) is checked by recomputing its fingerprint."""
        curvature = self.curvature()
        if self.sharded:
            # the manifest as opened (a publish since must not change what the id names)
            opened = json.dumps(self.manifest.to_dict(), sort_keys=True).encode()
            return verify_parts(
                self.path, opened, self.file, self.parts, self.layout, self.dtype, curvature,
                mode, threads,
            )  # fmt: skip
        factors = MmapFactorStore(
            self.layout, str(self.path), self.parts[0].offset, len(self), self.dtype
        ).array
        try:
            if "integrity" in self.file:
                return integrity.verify(self.file, factors, curvature, mode, threads)
            return integrity.verify_by_fingerprint(
                mode, factors, curvature, self.fingerprint,
                lambda: fingerprint(self.manifest, factors, curvature),
            )  # fmt: skip
        except IndexFormatError as e:
            raise IndexFormatError(f"{self.path}: {e}") from None
