"""Schemas of the views over all N scores and of what reproduces an answer (HTTP API v1): the
score histogram, totals by a metadata key, provenance, the comparison of two queries and an
example's context. indexer.query.answer builds the first three; these document them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from indexer import MAX_DAMPING, MIN_DAMPING, Direction, Normalize


class ScoreHistogram(BaseModel):
    n: int = Field(description="scores counted: every training example")
    edges: list[float] = Field(
        description="bin edges, ascending (signed-log bins, 4 per decade of |score|; one more "
        "than counts); the bins from the first to the last that holds a score"
    )
    counts: list[int]


class TotalsEntry(BaseModel):
    value: str = Field(description='the metadata value ("" where an example lacks the key)')
    rows: int = Field(description="training examples with this value")
    sum: float = Field(description="the sum of their scores")
    mean: float


class TotalsSummary(BaseModel):
    key: str
    groups: int = Field(description="distinct values of the key")
    rows: int = Field(description="examples summed over: every training example")
    highest: list[TotalsEntry] = Field(description="largest sums first (all values when few)")
    lowest: list[TotalsEntry] = Field(
        description="smallest sums first (empty when highest lists every value)"
    )


class QueryText(BaseModel):
    """A query as POST /v1/attributions takes it."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(..., min_length=1)
    completion: str | None = Field(None, min_length=1)


class Provenance(BaseModel):
    """What reproduces this answer (the page's exports carry it)."""

    index_fingerprint: str
    index_version: int | None = Field(description="this server's version number of the index")
    index_rows: int
    index_created: str | None
    model: str | None = Field(description="the model spec the index was built with")
    model_fingerprint: str | None
    preconditioner: str
    curvature_rank_r: int
    rank_c: int
    damping: float | None = Field(description="relative damping scored with (null: absolute)")
    normalize: Normalize
    k: int
    direction: Direction
    query_rank: int
    totals_by: str | None
    query: QueryText
    time: str = Field(description="when the answer was rendered (ISO 8601, UTC)")
    lorif_version: str


class CompareRequest(BaseModel):
    """Two queries scored against the same index with the same options."""

    model_config = ConfigDict(extra="forbid")

    a: QueryText = Field(description="the first query (prompt, optional completion)")
    b: QueryText = Field(description="the second query")
    k: int = Field(10, ge=1, le=200, strict=True, description="results per query and direction")
    direction: Literal["proponents", "opponents"] = "proponents"
    damping: float | None = Field(
        None,
        allow_inf_nan=False,
        strict=True,
        json_schema_extra={"minimum": MIN_DAMPING, "maximum": MAX_DAMPING},
    )
    normalize: Normalize = "none"


class CompareRow(BaseModel):
    example_id: int
    snippet: str
    meta: dict[str, Any]
    rank_a: int | None = Field(None, description="its rank for query a (absent: beyond `depth`)")
    score_a: float | None = None
    rank_b: int | None = None
    score_b: float | None = None


class CompareResponse(BaseModel):
    index_fingerprint: str
    direction: Literal["proponents", "opponents"]
    k: int
    depth: int = Field(description="ranks looked up per query (ranks beyond it are absent)")
    shared: list[CompareRow] = Field(description="in both top-k lists, by the better rank")
    only_a: list[CompareRow] = Field(description="in a's top-k only, a's order")
    only_b: list[CompareRow] = Field(description="in b's top-k only, b's order")
    overlap: float = Field(description="|shared| / k")
    provenance_a: Provenance
    provenance_b: Provenance


class ContextResponse(BaseModel):
    example_id: int
    by: Literal["order key", "example id"] = Field(
        description="how neighbours were found: the metadata's position/speech_id within the "
        "same source/play/act/scene, or neighbouring example ids"
    )
    examples: list[dict[str, Any]] = Field(
        description="{example_id, text, meta} in order, the example itself among them"
    )
