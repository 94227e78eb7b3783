"""Service settings: every field is also an environment variable (prefix ``LORIF_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORIF_", extra="ignore")

    index: str = Field("", description="Path of the index file to serve.")
    model: str | None = Field(None, description="Model path if it moved since the build.")
    device: str = Field("auto", description="auto | cpu | cuda[:N].")
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, description="Bind port.")
    max_batch: int = Field(32, ge=1, description="Most queries scored in one scan.")
    max_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill up.")
    queue_size: int = Field(256, ge=1, description="Queries admitted before 429.")
    request_timeout_s: float = Field(60.0, gt=0, description="Per-request deadline (504).")
    max_prompt_tokens: int = Field(1024, ge=2, description="Longest accepted query, in tokens.")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest accepted request body.")
    block_rows: int = Field(4096, ge=1, description="Factor rows per streamed block.")
    query_rank: int = Field(
        0,
        ge=0,
        description="0 = exact scan; c_q > 0 = scan with rank-c_q "
        "queries (method.md section 4), then re-score "
        "the candidates exactly.",
    )
    candidates: int = Field(
        4,
        ge=1,
        description="Low-rank path: candidates kept per result (x k) for the exact re-score.",
    )
    snippet_chars: int = Field(240, ge=16, description="Characters of example text per result.")
    cache_size: int = Field(
        1024, ge=0, description="In-process LRU entries (0 = off); used when no Redis URL is set."
    )
    redis_url: str | None = Field(None, description="redis://host:port/db for the shared cache.")
    cache_ttl_s: int = Field(24 * 3600, ge=1, description="Lifetime of a cached result.")
    redis_timeout_s: float = Field(0.05, gt=0, description="Per-call Redis timeout.")
    redis_breaker_reset_s: float = Field(
        5.0, gt=0, description="Seconds Redis is skipped after repeated failures."
    )
    api_key: str | None = Field(None, description="If set, required as X-API-Key on /v1.")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")
