"""Build settings (a leaf module: every package may import it).

One dataclass field = one ``lorif index build`` flag: the flag is ``--`` + the field name with
dashes, or the ``flag`` given in the field's metadata; ``help`` and ``choices`` come from the
metadata too. A nested dataclass (``BuildConfig.curvature``) contributes its fields as flags of
their own; fields without ``help`` are Python-only knobs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .curvature import DEFAULT_KIND, KINDS, method
from .errors import ConfigError

STORAGE_DTYPES = ("bf16", "fp16", "fp32")
TRUNCATIONS = ("plain", "kfac")  # engine/truncation.py; here to keep this module torch-free
FACTOR_METHODS = ("auto", "power", "svd")


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field that is also a command-line flag (``help``, optional ``flag`` name and
    ``choices`` in its metadata)."""
    return field(default=default, metadata={"help": help, **meta})


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


DEFAULT_SHARD_SIZE = 10_000  # rows per shard (LoRIF's release uses 10k)
# Relative dampings accepted: below 1e-6 lambda can underflow to non-finite
# scores (found by schemathesis with alpha = 5e-324); above 1e6 H^-1 is 1/lambda to 1e-6.
MIN_DAMPING, MAX_DAMPING = 1e-6, 1e6


def checked_damping(damping: float, name: str = "damping") -> float:
    """A relative damping alpha (a build's, or one chosen at query time), refused outside
    [MIN_DAMPING, MAX_DAMPING]: the one check of every damping a user gives."""
    if not MIN_DAMPING <= damping <= MAX_DAMPING:
        raise ConfigError(f"{name} must be in [{MIN_DAMPING:g}, {MAX_DAMPING:g}], not {damping}")
    return float(damping)


@dataclass
class CurvatureConfig:
    """The preconditioner (method.md sections 3, 3b): LoRIF's randomized truncated SVD of
    G^T G per layer, or token-level Kronecker factors (K-FAC / EK-FAC); and its damping."""

    kind: str = setting(
        DEFAULT_KIND,
        "Preconditioner: lowrank (truncated SVD of G^T G + Woodbury) | kfac | ekfac "
        "(token-level Kronecker factors in the projected space; need --shard-size > 0).",
        flag="curvature",
        choices=KINDS,
    )
    rank: int = setting(
        128,
        "r: rank of the truncated SVD of the curvature per layer (capped at D).",
        flag="curvature-rank",
    )
    oversample: int = setting(10, "p: oversampling of the randomized SVD.")
    power_iters: int = setting(3, "q: power iterations of the randomized SVD.")
    damping: float = setting(0.1, "alpha: lambda = alpha * mean(sigma^2[:r+p]) per layer.")
    damping_abs: float = setting(
        0.0, "Absolute lambda for every layer (overrides --damping when > 0)."
    )
    memory_budget: int = 2 << 30  # bytes of accumulators per group of layers
    block_bytes: int = 64 << 20  # bytes of one block's largest intermediate (float32)

    def validate(self) -> None:
        _check(
            [
                (self.kind in KINDS, f"--curvature must be one of {', '.join(KINDS)}"),
                (self.rank >= 0, "--curvature-rank (r) must be >= 0"),
                (self.oversample >= 0, "--oversample (p) must be >= 0"),
                (self.power_iters >= 0, "--power-iters (q) must be >= 0"),
                (self.damping_abs >= 0, "--damping-abs must be >= 0"),
            ]
        )
        if not self.damping_abs:  # else lambda is absolute and alpha unused
            checked_damping(self.damping, "--damping")


# Content keys of the curvature settings in a manifest's flat ``build_config`` (format v1).
_CURVATURE_KEYS = {
    "curvature": "kind",
    "curvature_rank": "rank",
    "oversample": "oversample",
    "power_iters": "power_iters",
    "damping": "damping",
    "damping_abs": "damping_abs",
}


@dataclass
class BuildConfig:
    """Everything that determines an index's content (plus where to write it)."""

    model: str = setting(
        "", "Model: a local HF model directory, a .gguf file, or a short model spec."
    )
    data: str = setting(
        "",
        "Training data: a .jsonl file (fields `text` or `prompt`+"
        "`completion`, others kept as metadata) or a saved HF dataset "
        "directory.",
    )
    output: str = setting(
        "index",
        "Output index: a directory (--shard-size > 0; manifest.json appears when done) or "
        "one file (written as OUTPUT.partial, renamed when done).",
    )
    layers: str = setting(
        "",
        "Comma-separated name globs of tracked Linear/Conv1D layers; "
        "empty = every linear layer inside the repeated blocks (no "
        "embeddings, no LM head).",
    )
    max_tokens: int = setting(512, "Truncate each example to this many tokens.")
    limit: int = setting(0, "Index only the first LIMIT examples (0 = all).")
    proj_factor: int = setting(16, "Projection factor f: d1 = in_dim // f, d2 = out_dim // f.")
    d1: int = setting(
        0, "Explicit input-side projection dim, capped at each layer's input dim (0 = use f)."
    )
    d2: int = setting(
        0, "Explicit output-side projection dim, capped at each layer's output dim (0 = use f)."
    )
    rank: int = setting(1, "c: rank of the stored per-example gradient factors.")
    bytes_per_example: int = setting(
        0,
        "Storage budget per example: choose c per layer (instead of --rank) from each layer's "
        "spectrum on --truncation-sample examples, the score energy kept per byte; 0 = off.",
    )
    factor_method: str = setting(
        "auto", "How to compute rank-c factors: power | svd | auto.", choices=FACTOR_METHODS
    )
    truncation: str = setting(
        "plain",
        "Norm the rank-c truncation is optimal in: plain (Frobenius of G~) | kfac (K-FAC-"
        "whitened, W_A G~ W_S with the token-level moments of --truncation-sample examples: "
        "the norm the Kronecker preconditioners score in; one extra pass over the sample).",
        choices=TRUNCATIONS,
    )
    truncation_damping: float = setting(
        1.0, "delta of --truncation kfac: each side's moment / its mean eigenvalue + delta I."
    )
    truncation_sample: int = setting(
        1024,
        "Examples (the first ones) whose moments --truncation kfac whitens with and whose "
        "spectra --bytes-per-example chooses the ranks from.",
    )
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    dtype: str = setting(
        "bf16", "Storage dtype of the factors: bf16 | fp16 | fp32.", choices=STORAGE_DTYPES
    )
    batch_size: int = setting(8, "Examples per forward/backward batch.")
    batch_tokens: int = setting(
        0,
        "Batches by a token budget instead: as many examples (of similar length) as fit this "
        "many padded tokens (their count x the longest one's tokens); 0 = --batch-size each. "
        "Larger batches of short examples keep a GPU busy (a small model is launch-bound).",
    )
    autocast: str = setting(
        "none",
        "Mixed precision of the model's forward/backward while indexing: none | bf16 (the "
        "capture's projections and factors stay float32).",
        choices=("none", "bf16"),
    )
    device: str = setting("auto", "Torch device for featurization: auto | cpu | cuda[:N].")
    threads: int = setting(
        0,
        "CPU threads for torch (0 = the CPUs available to this process "
        "(affinity and cgroup quota), or $LORIF_THREADS).",
    )
    seed: int = setting(0, "Seed of projections and randomized SVD.")
    chat_template: bool = setting(False, "Format prompts with the tokenizer's chat template.")
    store_projections_mb: float = setting(
        64.0,
        "Store the projection matrices in the index "
        "when their total fp32 size is at most this "
        "many MiB.",
    )
    overwrite: bool = setting(
        False, "Replace an existing finished index / discard a partial build."
    )
    nproc: int = setting(
        1,
        "Processes to build with on this machine: > 1 launches torchrun with this many (each "
        "featurizes its own shards; needs --shard-size). Several machines: start "
        "`torchrun ... -m lorif_cli.main index build` yourself.",
    )
    shard_size: int = setting(
        DEFAULT_SHARD_SIZE,
        "Rows per shard: the index is a directory of shard files (format 2), which `lorif index "
        "add` grows and torchrun builds in parallel; 0 = one file (format 1).",
    )

    # Fields that do not change the index's content; a resume may differ in these.
    RUNTIME_FIELDS = ("output", "overwrite", "device", "threads", "shard_size", "nproc")

    def validate(self, processes: int = 1) -> None:
        """ConfigError (one line) for settings that do not go together; ``processes``: the
        build runs on that many (torchrun's WORLD_SIZE), besides ``nproc``."""
        _check(
            [
                (self.max_tokens >= 2, "--max-tokens must be >= 2"),
                (self.limit >= 0, "--limit must be >= 0"),
                (self.proj_factor >= 1, "--proj-factor must be >= 1"),
                (self.d1 >= 0 and self.d2 >= 0, "--d1/--d2 must be >= 0"),
                (self.rank >= 1, "--rank (c) must be >= 1"),
                (self.bytes_per_example >= 0, "--bytes-per-example must be >= 0"),
                (
                    self.dtype in STORAGE_DTYPES,
                    f"--dtype must be one of {', '.join(STORAGE_DTYPES)}",
                ),
                (
                    self.factor_method in FACTOR_METHODS,
                    f"--factor-method must be one of {', '.join(FACTOR_METHODS)}",
                ),
                (
                    self.truncation in TRUNCATIONS,
                    f"--truncation must be one of {', '.join(TRUNCATIONS)}",
                ),
                (self.truncation_damping > 0, "--truncation-damping must be > 0"),
                (self.truncation_sample >= 1, "--truncation-sample must be >= 1"),
                (self.batch_size >= 1, "--batch-size must be >= 1"),
                (self.batch_tokens >= 0, "--batch-tokens must be >= 0"),
                (self.threads >= 0, "--threads must be >= 0"),
                (self.shard_size >= 0, "--shard-size must be >= 0"),
                (self.nproc >= 1, "--nproc must be >= 1"),
                (
                    max(self.nproc, processes) == 1 or self.shard_size > 0,
                    "a build on several processes (--nproc, torchrun) writes a sharded index: "
                    "it needs --shard-size N",
                ),
            ]
        )
        self.curvature.validate()
        method(self.curvature.kind).validate(self)

    @property
    def layer_globs(self) -> list[str]:
        return [g.strip() for g in self.layers.split(",") if g.strip()]

    def content_dict(self) -> dict[str, Any]:
        """Settings that determine the index content (compared when resuming), flat as the
        manifest records them."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in self.RUNTIME_FIELDS and f.name != "curvature"
        }
        d.update({key: getattr(self.curvature, attr) for key, attr in _CURVATURE_KEYS.items()})
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BuildConfig:
        """Inverse of content_dict; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)} - {"curvature"}
        curvature = CurvatureConfig(
            **{attr: values[key] for key, attr in _CURVATURE_KEYS.items() if key in values}
        )
        return cls(curvature=curvature, **{k: v for k, v in values.items() if k in known})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BuildConfig:
        """A named set of settings (see PRESETS), with ``overrides`` applied."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
        return cls.from_dict({**PRESETS[name], **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    # The demo: the Shakespeare Llama, 4,864 B per speech (README: sizes and build time).
    "shakespeare-demo": {
        "model": "shakespeare-llama",
        "proj_factor": 8,
        "rank": 1,
        "curvature_rank": 256,
        "max_tokens": 256,
        "batch_size": 16,
        "seed": 0,
    },
}
