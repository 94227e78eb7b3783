"""Service settings: every field is also an environment variable (prefix ``LORIF_``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from indexer import ConfigError, checked_damping


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORIF_", extra="ignore")

    index: str = Field("", description="Path of the index to serve (a directory, or one file).")
    model: str | None = Field(None, description="Model path if it moved since the build.")
    device: str = Field("auto", description="auto | cpu | cuda[:N].")
    threads: int = Field(
        0,
        ge=0,
        description="CPU threads for torch (0 = the CPUs available: affinity and cgroup quota).",
    )
    scorer: Literal["process", "thread"] = Field(
        "process",
        description="Where the model and the scan run: process = a child process at a lower CPU "
        "priority (answers from the cache stay fast while it is busy); thread = a worker thread "
        "of the serving process (one process, one model copy).",
    )
    cluster: str | None = Field(
        None,
        description="Spread the scan over shard groups on Ray Serve: `local` (a Ray started "
        "here) or a Ray address (`auto`, `ray://host:10001`); unset = one process, no Ray.",
    )
    cluster_groups: int = Field(
        2, ge=1, description="Groups of shards, each scanned by its own Serve deployment."
    )
    cluster_replicas: int = Field(1, ge=1, description="Replicas per shard group.")
    cluster_cpus: float = Field(1.0, ge=0, description="CPUs per shard-group replica.")
    cluster_gpus: float = Field(0.0, ge=0, description="GPUs per shard-group replica.")
    scorer_nice: int = Field(
        10, ge=0, le=19, description="CPU priority (nice) added to the scorer process."
    )
    scorer_spare: bool = Field(
        True,
        description="Keep a spare scorer process with its imports done (a few hundred MB), so "
        "a scorer that dies is back in seconds.",
    )
    verify: Literal["full", "fast", "off"] = Field(
        "full",
        description="Start-up integrity check: full = every stored byte against its build-time "
        "checksum; fast = manifest, curvature and examples (factor blocks unchecked); off.",
    )
    watch_s: float = Field(
        2.0,
        ge=0,
        description="Seconds between looks at the published index: a new version (`lorif index "
        "add`, `index curvature`, a build that publishes as it goes) is opened, verified and "
        "switched to without a restart; 0 = off (POST /v1/admin/reload still switches).",
    )
    scorer_grace_s: float = Field(
        60.0,
        gt=0,
        description="A scorer down (restarting) for longer than this fails /health/live, so an "
        "orchestrator restarts the server.",
    )
    host: str = Field("127.0.0.1", description="Bind address.")
    http: Literal["auto", "httptools", "h11"] = Field(
        "auto", description="HTTP parser (auto = httptools when installed, else h11)."
    )
    loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="Event loop (auto = uvloop when installed, else asyncio)."
    )
    port: int = Field(8000, description="Bind port.")
    max_batch: int = Field(32, ge=1, description="Most queries scored in one scan.")
    max_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill up.")
    queue_size: int = Field(256, ge=1, description="Queries admitted before 429.")
    request_timeout_s: float = Field(60.0, gt=0, description="Per-request deadline (504).")
    explain_queue: int = Field(
        4, ge=1, description="Explanations admitted (running or waiting) before 429."
    )
    max_prompt_tokens: int = Field(1024, ge=2, description="Longest accepted query, in tokens.")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest accepted request body.")
    block_rows: int = Field(
        0, ge=0, description="Factor rows per scanned block (0 = 4,096 on CPU, 65,536 on CUDA)."
    )
    resident: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Keep the factor rows in device memory: auto = on a GPU when they fit "
        "(with 2 GiB to spare), on, off (stream them from the file).",
    )
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
    damping: float | None = Field(
        None,
        description="Default relative damping alpha of queries (lambda = alpha * the layer's "
        "mean eigenvalue; a request's `damping` overrides it); unset: the index build's.",
    )
    snippet_chars: int = Field(240, ge=16, description="Characters of example text per result.")
    cache_size: int = Field(
        1024,
        ge=0,
        description=(
            "In-process LRU of answers (0 = off): the cache without a Redis URL, a near "
            "cache in front of Redis with one (no round trip for recent answers; they keep "
            "coming while Redis is down)."
        ),
    )
    redis_url: str | None = Field(None, description="redis://host:port/db for the shared cache.")
    cache_ttl_s: int = Field(24 * 3600, ge=1, description="Lifetime of a cached result.")
    redis_timeout_s: float = Field(0.05, gt=0, description="Per-call Redis timeout.")
    redis_connections: int = Field(
        16,
        ge=1,
        description="Redis connections, opened at start; a request waits for a free one (within "
        "the Redis timeout) rather than opening more.",
    )
    redis_breaker_reset_s: float = Field(
        5.0, gt=0, description="Seconds Redis is skipped after repeated failures."
    )
    api_key: str | None = Field(
        None,
        description="If set, required as X-API-Key on /v1 (prefer the environment variable or "
        "--api-key-file: a flag is visible in ps).",
    )
    api_key_file: str | None = Field(None, description="Read the API key from this file.")
    public_docs: bool = Field(
        False,
        description="Serve /docs and /openapi.json without the API key when one is set.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Allowed CORS origins: a JSON list or comma-separated URLs.",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must send its request headers within this time."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="A request body must arrive within this time (408)."
    )
    max_connections: int = Field(
        512, ge=1, description="Open connections and requests before 503 (uvicorn's limit)."
    )

    @field_validator("damping")
    @classmethod
    def _checked_damping(cls, value: float | None) -> float | None:
        """The one damping check (indexer.checked_damping), as a validation error."""
        try:
            return None if value is None else checked_damping(value)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """``--cors-origins URL``, ``a,b`` or a JSON list (the flag and the environment)."""
        if not isinstance(value, str):
            return value
        if value.strip().startswith("["):
            try:
                return json.loads(value)
            except ValueError as e:
                raise ValueError(f"not a JSON list of origins: {e}") from None
        return [o.strip() for o in value.split(",") if o.strip()]

    @model_validator(mode="after")
    def _read_api_key_file(self) -> ServiceSettings:
        """``api_key_file`` sets ``api_key`` (its first line); giving both is an error."""
        if self.api_key_file:
            if self.api_key:
                raise ValueError("give the API key or an API key file, not both")
            try:
                key = Path(self.api_key_file).read_text().splitlines()[0].strip()
            except (OSError, IndexError) as e:
                raise ValueError(f"cannot read the API key file {self.api_key_file}: {e}") from e
            if not key:
                raise ValueError(f"the API key file {self.api_key_file} is empty")
            self.api_key = key
        return self
