"""Request and response schemas of the HTTP API (v1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from indexer import CURVATURE_KINDS, MAX_DAMPING, MIN_DAMPING, Direction, Normalize

from .protocol_views import Provenance, ScoreHistogram, TotalsSummary

QueryDamping = Annotated[
    Annotated[float, Field(allow_inf_nan=False, strict=True)] | None,
    Field(
        # the bounds as documentation: QueryOptions checks them (422 where a request enters)
        json_schema_extra={"minimum": MIN_DAMPING, "maximum": MAX_DAMPING},
        description="Relative damping alpha for this query (lambda = alpha * the layer's mean "
        "eigenvalue); default: the server's `damping`, else the index build's.",
    ),
]


class AttributionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        ...,
        min_length=1,
        description="Query text. Without a completion, all its tokens count in the loss.",
    )
    completion: str | None = Field(
        None, min_length=1, description="If given, only these tokens count."
    )
    k: int = Field(20, ge=1, le=1000, strict=True, description="Results per direction.")
    direction: Direction = "proponents"
    verbatim: bool = Field(
        True,
        strict=True,
        description="Also list training examples that contain runs of the query's words "
        "verbatim (needs the index's verbatim table).",
    )
    damping: QueryDamping = None
    normalize: Normalize = Field(
        "none",
        description="unit: cosines of the gradients under H^-1 (which examples point the same "
        "way, not which changed the loss most; not on a cluster).",
    )
    totals_by: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Also sum every training example's score per value of this metadata key "
        "(e.g. play, speaker; one more reduction in the scan; not on a cluster).",
    )
    full_text: bool = Field(
        False, strict=True, description="Results carry their full text (`text`) too."
    )

    def options(self) -> dict[str, Any]:
        """The request's query options (``Runtime.options`` adds the server's and checks)."""
        return self.model_dump(
            include={"k", "direction", "damping", "normalize", "verbatim", "totals_by"}
        )


class ExplanationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(..., min_length=1, description="The query, as in /v1/attributions.")
    completion: str | None = Field(None, min_length=1)
    example_id: int = Field(..., ge=0, strict=True, description="The training example to explain.")
    damping: QueryDamping = None


class TokenScore(BaseModel):
    text: str
    contribution: float = Field(description="This position's share of the score.")
    target: bool = Field(description="The token is a prediction target counted in the loss.")


class ExplanationResponse(BaseModel):
    index_fingerprint: str
    example_id: int
    score: float = Field(
        description="Sum of either list of contributions (the pair's score "
        "from the recomputed example gradient)."
    )
    index_score: float = Field(description="The scan's score of this pair (stored factors).")
    query_tokens: list[TokenScore]
    example_tokens: list[TokenScore]
    example_truncated: bool
    meta: dict[str, Any]
    compute_ms: float


class Result(BaseModel):
    rank: int
    example_id: int
    score: float
    snippet: str
    meta: dict[str, Any]
    text: str | None = Field(None, description="The full text (requests with full_text).")
    verbatim_words: int | None = Field(
        None,
        description="The longest run of the query's words (>= 4) this example contains "
        "verbatim; absent: none.",
    )


class VerbatimResult(BaseModel):
    example_id: int
    words: int = Field(description="Length of the longest run of query words it contains.")
    text: str = Field(description="That run as the example spells it.")
    start: int = Field(description="Its character offsets in the example's text.")
    end: int
    snippet: str = Field(description="The example's text around the run.")
    meta: dict[str, Any]


class Timings(BaseModel):
    queue_ms: float
    featurize_ms: float
    scan_ms: float
    total_ms: float


class Approximation(BaseModel):
    path: Literal["exact", "low-rank"]
    normalize: Normalize = "none"
    damping: float | None = Field(
        None, description="The relative damping alpha scored with (null: absolute lambda)."
    )
    query_rank: int = Field(description="Rank c_q of the query in the scan (0 = exact).")
    residual: float | None = Field(
        None,
        description="||P_q - rank-c_q part||_F / ||P_q||_F: "
        "how much of the query the candidate scan ignored. Returned "
        "scores are exact either way.",
    )


class AttributionResponse(BaseModel):
    index_fingerprint: str
    query_tokens: int
    scoring: Approximation
    proponents: list[Result] | None = None
    opponents: list[Result] | None = None
    verbatim: list[VerbatimResult] | None = Field(
        None,
        description="Training examples holding the query's words verbatim, longest run first "
        "(influence is not retrieval: these need not be the top proponents). Absent when the "
        "request says verbatim=false or the index has no verbatim table.",
    )
    score_histogram: ScoreHistogram | None = Field(
        None, description="Where all N scores lie (the shown results are in its outer bins)."
    )
    totals: TotalsSummary | None = Field(None, description="Requests with totals_by.")
    provenance: Provenance
    cached: bool
    timings: Timings


class ExampleResponse(BaseModel):
    example_id: int
    prompt: str
    completion: str
    text: str
    meta: dict[str, Any]
    n_tokens: int


class LayerSummary(BaseModel):
    name: str
    in_dim: int
    out_dim: int
    d1: int
    d2: int
    D: int = Field(description="d1 * d2: the dense projected gradient's size")
    c: int = Field(1, description="the layer's factor rank (per layer under a storage budget)")
    lambda_: float = Field(alias="lambda", description="The layer's damping")


class VersionSummary(BaseModel):
    """The version of the index a server answers from (it follows what is published)."""

    number: int = Field(description="1 = the version it started with, then one more per switch")
    fingerprint: str
    rows: int = Field(description="examples in this version")
    curvature_rows: int = Field(description="rows its curvature basis was computed over")
    opened: str = Field(description="when this server switched to it (ISO 8601, UTC)")


class ReloadResponse(BaseModel):
    """What POST /v1/admin/reload did."""

    status: Literal["switched", "unchanged"]
    version: VersionSummary = Field(description="the version now serving")


class RefusedVersion(BaseModel):
    """A published version that failed to open or verify (the previous one kept serving)."""

    fingerprint: str | None
    error: str
    at: str


class IndexSummary(BaseModel):
    """The index's summary (as `lorif index info --json` prints it) and this server's scoring."""

    model_config = ConfigDict(populate_by_name=True)

    fingerprint: str
    model: dict[str, Any] = Field(description="spec, class and weight fingerprint (no paths)")
    n_examples: int
    n_layers: int
    layers: list[LayerSummary]
    rank_c: int = Field(description="the factor rank c (the largest, when chosen per layer)")
    bytes_budget: int | None = Field(
        None,
        description="the --bytes-per-example budget the per-layer ranks were chosen for (null: "
        "one c for every layer)",
    )
    truncation: str = Field(
        "plain", description="the norm the rank-c factors are optimal in: plain | kfac"
    )
    curvature_rank_r: int
    curvature: str = Field(
        description="the preconditioner (method.md section 3): one of " + ", ".join(CURVATURE_KINDS)
    )
    basis_bytes: int = Field(
        description="bytes of the curvature basis a scorer holds (the method's estimate)"
    )
    damping: float | None = Field(
        None, description="the server's default relative damping alpha (null: absolute lambda)"
    )
    storage_dtype: str
    bytes_per_example: int = Field(description="c * sum(d1 + d2) * bytes per value")
    stored_bytes_per_example: float = Field(description="the factor datasets' size / N")
    shards: int = Field(description="shard files of a sharded index (0: one file)")
    curvature_rows: int = Field(description="rows the curvature basis was computed over")
    target_rows: int | None = Field(
        None,
        description="a build publishing as it goes grows the index to this many rows (null: "
        "not growing)",
    )
    dense_bytes_per_example: int
    dense_ratio: float
    created: str | None
    scoring_path: Literal["exact", "low-rank"]
    query_rank: int
    scorer: Literal["process", "thread", "cluster"] = Field(
        description="where the model and the scan run (cluster: the scan on Ray Serve)"
    )
    device: str = Field(description="the scorer's torch device")
    resident: bool = Field(description="factor rows held in device memory (else streamed)")
    blocks: int | None = Field(
        None, description="transformer blocks the layers sit in (null: not numbered)"
    )
    example_queries: list[dict[str, str]] = Field(
        default_factory=list,
        description="queries an empty page offers ({prompt, completion, note}; "
        "`lorif index example-queries`)",
    )
    version: VersionSummary
    refused_version: RefusedVersion | None = Field(
        None, description="the last published version refused since this one was opened"
    )
