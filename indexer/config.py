"""Build settings: one dataclass field = one ``lorif index build`` flag (help text in metadata)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

STORAGE_DTYPES = ("bf16", "fp16", "fp32")
FACTOR_METHODS = ("auto", "power", "svd")


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class BuildConfig:
    """Everything that determines an index's content (plus where to write it)."""

    model: str = _f("", "Model: a local HF model directory, a .gguf file, or a short model spec.")
    data: str = _f("", "Training data: a .jsonl file (fields `text` or `prompt`+`completion`, "
                       "others kept as metadata) or a saved HF dataset directory.")
    output: str = _f("index.h5", "Output index path (written as OUTPUT.partial, renamed when done).")
    layers: str = _f("", "Comma-separated name globs of tracked Linear/Conv1D layers; empty = "
                         "every linear layer inside the repeated blocks (no embeddings, no LM head).")
    max_tokens: int = _f(512, "Truncate each example to this many tokens.")
    limit: int = _f(0, "Index only the first LIMIT examples (0 = all).")
    proj_factor: int = _f(16, "Projection factor f: d1 = in_dim // f, d2 = out_dim // f.")
    d1: int = _f(0, "Explicit input-side projection dim, capped at each layer's input dim (0 = use f).")
    d2: int = _f(0, "Explicit output-side projection dim, capped at each layer's output dim (0 = use f).")
    rank: int = _f(1, "c: rank of the stored per-example gradient factors.")
    factor_method: str = _f("auto", "How to compute rank-c factors: power | svd | auto.",
                            choices=FACTOR_METHODS)
    curvature_rank: int = _f(128, "r: rank of the truncated SVD of the curvature per layer "
                                  "(capped at D).")
    oversample: int = _f(10, "p: oversampling of the randomized SVD.")
    power_iters: int = _f(3, "q: power iterations of the randomized SVD.")
    damping: float = _f(0.1, "alpha: lambda = alpha * mean(sigma^2[:r+p]) per layer.")
    damping_abs: float = _f(0.0, "Absolute lambda for every layer (overrides --damping when > 0).")
    dtype: str = _f("bf16", "Storage dtype of the factors: bf16 | fp16 | fp32.",
                    choices=STORAGE_DTYPES)
    batch_size: int = _f(8, "Examples per forward/backward batch.")
    device: str = _f("auto", "Torch device for featurization: auto | cpu | cuda[:N].")
    seed: int = _f(0, "Seed of projections and randomized SVD.")
    chat_template: bool = _f(False, "Format prompts with the tokenizer's chat template.")
    store_projections_mb: float = _f(64.0, "Store the projection matrices in the index when their "
                                           "total fp32 size is at most this many MiB.")
    overwrite: bool = _f(False, "Replace an existing finished index / discard a partial build.")

    # Fields that do not change the index's content; a resume may differ in these.
    RUNTIME_FIELDS = ("output", "overwrite", "device")

    def validate(self) -> None:
        checks = [
            (self.max_tokens >= 2, "--max-tokens must be >= 2"),
            (self.limit >= 0, "--limit must be >= 0"),
            (self.proj_factor >= 1, "--proj-factor must be >= 1"),
            (self.d1 >= 0 and self.d2 >= 0, "--d1/--d2 must be >= 0"),
            (self.rank >= 1, "--rank (c) must be >= 1"),
            (self.curvature_rank >= 0, "--curvature-rank (r) must be >= 0"),
            (self.oversample >= 0, "--oversample (p) must be >= 0"),
            (self.power_iters >= 0, "--power-iters (q) must be >= 0"),
            (self.damping > 0 or self.damping_abs > 0, "--damping or --damping-abs must be > 0"),
            (self.damping_abs >= 0, "--damping-abs must be >= 0"),
            (self.dtype in STORAGE_DTYPES, f"--dtype must be one of {', '.join(STORAGE_DTYPES)}"),
            (self.factor_method in FACTOR_METHODS,
             f"--factor-method must be one of {', '.join(FACTOR_METHODS)}"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def layer_globs(self) -> list[str]:
        return [g.strip() for g in self.layers.split(",") if g.strip()]

    def content_dict(self) -> dict[str, Any]:
        """Settings that determine the index content (compared when resuming)."""
        d = dataclasses.asdict(self)
        for name in self.RUNTIME_FIELDS:
            d.pop(name, None)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BuildConfig":
        """Inverse of content_dict/asdict; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
