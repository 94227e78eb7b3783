"""A finished index opened read-only: validated on open, factors memory-mapped, the curvature
basis, the projections and the training examples read on demand."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Example
from ..engine.curvature import LayerCurvature
from ..engine.layout import FactorLayout
from ..engine.projection import Projections
from ..errors import IndexFormatError
from . import integrity
from .codec import NUMPY_STORAGE
from .format import PARTIAL_SUFFIX, fingerprint, h5open, read_manifest
from .store import MmapFactorStore

MODEL_SUMMARY_KEYS = ("spec", "name", "class", "fingerprint")  # never paths of the build host


def parse_meta(raw: str) -> dict[str, Any]:
    """An example's metadata; text that is not a JSON object (a damaged or hand-edited file)
    is kept as it is under ``_unparsed`` rather than failing the read."""
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    return meta if isinstance(meta, dict) else {"_unparsed": raw}


def _model_summary(model: dict[str, Any]) -> dict[str, Any]:
    """The manifest's model entry without paths of the build host (a spec that is a path is
    reduced to its last component)."""
    out = {k: model[k] for k in MODEL_SUMMARY_KEYS if k in model}
    if "/" in str(out.get("spec", "")):
        out["spec"] = Path(out["spec"]).name
    return out


class Index:
    """A finished index opened read-only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(self.path).endswith(PARTIAL_SUFFIX):
            raise IndexFormatError(
                f"{self.path}: an unfinished build, not an index "
                "(rerun `lorif index build` with the same settings to resume)"
            )
        if not self.path.exists():
            raise IndexFormatError(f"index not found: {self.path}")
        if self.path.is_dir():
            raise IndexFormatError(f"{self.path} is a directory, not an index file")
        if not os.access(self.path, os.R_OK):
            raise IndexFormatError(f"{self.path}: permission denied (the index must be readable)")
        self.file = h5open(self.path, "r")
        try:
            self.manifest = read_manifest(self.file, self.path)
            self._validate()
        except Exception:
            self.file.close()
            raise
        self.layout = FactorLayout.from_manifest(self.manifest)
        self.dtype: str = self.manifest["storage_dtype"]
        self.fingerprint: str = self.manifest["fingerprint"]

    def _validate(self) -> None:
        f, m, p = self.file, self.manifest, self.path
        if f.attrs.get("status") != "complete" or "fingerprint" not in m:
            raise IndexFormatError(f"{p}: the build did not complete")
        layout = FactorLayout.from_manifest(m)
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

    def __enter__(self) -> Index:
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
        return (
            self.manifest["rank"] * sum(d["d1"] + d["d2"] for d in layers) * value,
            sum(d["d1"] * d["d2"] for d in layers) * value,
        )

    def summary(self) -> dict[str, Any]:
        """What `lorif index info` prints and `GET /v1/index` returns (no host paths)."""
        m, n = self.manifest, len(self)
        per, dense = self.bytes_per_example()
        lam = m["curvature"]["lambda"]
        layers = [
            {
                "name": d["name"],
                "in_dim": d["in_dim"],
                "out_dim": d["out_dim"],
                "d1": d["d1"],
                "d2": d["d2"],
                "D": d["d1"] * d["d2"],
                "lambda": lam[d["name"]],
            }
            for d in m["layers"]
        ]
        return {
            "fingerprint": self.fingerprint,
            "model": _model_summary(m["model"]),
            "n_examples": n,
            "n_layers": len(layers),
            "layers": layers,
            "rank_c": m["rank"],
            "curvature_rank_r": m["curvature"]["rank"],
            "storage_dtype": self.dtype,
            "bytes_per_example": per,
            "stored_bytes_per_example": self.file["factors"].id.get_storage_size() / max(n, 1),
            "dense_bytes_per_example": dense,
            "dense_ratio": round(dense / per, 2),
            "created": m.get("build_info", {}).get("created"),
        }

    def store(self) -> MmapFactorStore:
        offset = self.file["factors"].id.get_offset()
        return MmapFactorStore(self.layout, str(self.path), offset, len(self), self.dtype)

    def curvature(self) -> dict[str, LayerCurvature]:
        out = {}
        for t in self.layout.layers:
            g = self.file[f"curvature/{t.name}"]
            out[t.name] = LayerCurvature(g["V"][()], g["sigma2"][()], float(g.attrs["lambda"]))
        return out

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
        """Several examples with one read per field (ids in any order, repeats allowed)."""
        if not ids:
            return []
        uniq = sorted({int(i) for i in ids})
        if uniq[0] < 0 or uniq[-1] >= len(self):
            raise IndexError(f"example ids must be in [0, {len(self)}), got {uniq[0]}..{uniq[-1]}")
        g = self.file["examples"]
        fields = {f: g[f].asstr(errors="replace")[uniq] for f in ("prompt", "completion", "meta")}
        at = {
            i: Example(completion=c, prompt=p, meta=parse_meta(m))
            for i, p, c, m in zip(
                uniq, fields["prompt"], fields["completion"], fields["meta"], strict=True
            )
        }
        return [at[int(i)] for i in ids]

    def n_tokens(self, i: int) -> int:
        """Tokens of example ``i`` as indexed (after truncation to the build's max_tokens)."""
        return int(self.file["examples/n_tokens"][i])

    def verify(
        self, mode: integrity.VerifyMode = "full", threads: int = 1
    ) -> integrity.VerifyReport:
        """Check the stored bytes against the checksums written at build time (see
        storage/integrity.py); IndexFormatError names what is corrupted. A file without
        checksums (built before they existed) is checked by recomputing its fingerprint."""
        factors, curvature = self.store().array, self.curvature()
        try:
            if "integrity" in self.file:
                return integrity.verify(self.file, factors, curvature, mode, threads)
            t0 = time.perf_counter()
            if mode != "off":
                integrity.check_curvature(curvature)
            if (
                mode == "full"
                and fingerprint(self.manifest, factors, curvature) != self.fingerprint
            ):
                raise IndexFormatError("content does not match its fingerprint (corrupted)")
            full = mode == "full"  # then the fingerprint is the content as read
            return integrity.VerifyReport(
                mode,
                factors.nbytes if full else 0,
                time.perf_counter() - t0,
                "fingerprint",
                content_id=self.fingerprint if full else None,
            )
        except IndexFormatError as e:
            raise IndexFormatError(f"{self.path}: {e}") from None
