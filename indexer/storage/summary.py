"""An index's summary: what `lorif index info` prints and `GET /v1/index` returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..curvature import method
from .metadata import read_example_queries

if TYPE_CHECKING:
    from .reader import Index


def index_summary(index: Index) -> dict[str, Any]:
    """Model, N, layers, ranks, curvature, bytes per example, shards, coverage (no host
    paths)."""
    m, n, curvature = index.manifest, len(index), index.curvature_record
    per, dense = index.bytes_per_example()
    layers = [
        {
            "name": t.name,
            "in_dim": t.in_dim,
            "out_dim": t.out_dim,
            "d1": t.d1,
            "d2": t.d2,
            "D": t.d1 * t.d2,
            "c": c,
            "lambda": curvature.lambdas[t.name],
        }
        for t, c in zip(m.layers, index.layout.ranks, strict=True)
    ]
    return {
        "fingerprint": index.fingerprint,
        "model": m.model_summary(),
        "n_examples": n,
        "n_layers": len(layers),
        "layers": layers,
        "rank_c": m.rank,
        "bytes_budget": m.config().bytes_per_example or None,
        "truncation": m.config().truncation,
        "curvature_rank_r": curvature.rank,
        "curvature": index.curvature_kind,
        "basis_bytes": method(index.curvature_kind).memory_bytes(
            index.layout.layers, curvature.rank
        ),
        "storage_dtype": index.dtype,
        "bytes_per_example": per,
        "stored_bytes_per_example": sum(
            p.file["factors"].id.get_storage_size() for p in index.parts
        )
        / max(n, 1),
        "shards": len(index.parts) if index.sharded else 0,
        "curvature_rows": index.curvature_rows,
        "target_rows": index.target_rows,
        "dense_bytes_per_example": dense,
        "dense_ratio": round(dense / per, 2),
        "created": (m.build_info or {}).get("created"),
        "blocks": _blocks([t.name for t in m.layers]),
        "example_queries": [q.__dict__ for q in read_example_queries(index.path)],
    }


def _blocks(names: list[str]) -> int | None:
    """Transformer blocks the tracked layers sit in (the distinct numbers in their dotted
    names, e.g. ``model.layers.3.mlp.up_proj``); None when the names carry none."""
    numbers = {next((p for p in n.split(".") if p.isdigit()), None) for n in names}
    numbers.discard(None)
    return len(numbers) or None
