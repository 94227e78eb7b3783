"""Loading causal LMs (HF directory, GGUF file or short name), fingerprinting their weights, and
choosing the torch device."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelLoadError
from . import registry


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu or cuda[:N])") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return device


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    directory: str
    gguf_file: str | None


def resolve_model_spec(spec: str) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for a model directory or a .gguf path."""
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p.parent, p.name
    if p.is_dir():
        ggufs = sorted(x.name for x in p.glob("*.gguf"))
        has_hf = (p / "config.json").exists()
        if not has_hf and len(ggufs) == 1:
            return p, ggufs[0]
        if not has_hf:
            raise ModelLoadError(
                f"{p}: no config.json and {len(ggufs)} .gguf files; "
                "pass the model directory or one .gguf file"
            )
        return p, None
    names = ", ".join(registry.short_names())
    raise ModelLoadError(
        f"model not found: {spec} (a local HF model directory, a .gguf file, or a short name: "
        f"{names})"
    )


def locate_model(spec: str) -> tuple[Path, str | None, Path | None]:
    """(directory, GGUF file name or None, where to keep a converted copy or None) of a model
    spec, without loading it: a missing model is reported before anything slow happens."""
    convert_to = None
    if registry.canonical(spec):
        _, path, convert_to = registry.resolve(spec)
        spec = str(path)
    directory, gguf = resolve_model_spec(spec)
    return directory, gguf, convert_to


def preload_libraries() -> None:
    """Import what loading a model imports (transformers' model and tokenizer machinery, ~2 s
    on a 2-core machine), so that a process waiting for work loads its model at once."""
    import transformers.modeling_utils  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401


def load_causal_lm(spec: str, device: torch.device | str = "cpu") -> LoadedModel:
    """Load model + tokenizer offline (fp32 weights; GGUF tensors are dequantized).

    ``spec``: a local HF directory, a .gguf file, or a short name (see registry).
    """
    directory, gguf, convert_to = locate_model(spec)
    from transformers import AutoModelForCausalLM

    kwargs = _offline_kwargs(gguf)
    try:
        tokenizer = _tokenizer(directory, kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, **kwargs)
    except Exception as e:  # noqa: BLE001 - surface any loader failure as one line
        raise ModelLoadError(f"cannot load model from {spec}: {type(e).__name__}: {e}") from None
    if convert_to is not None:  # keep a fast-loading HF copy of a dequantized GGUF
        tmp = convert_to.with_name(convert_to.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        # The weights are plain fp32 after dequantisation; drop the GGUF marker that makes
        # transformers refuse to serialise them.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(convert_to, ignore_errors=True)
        tmp.replace(convert_to)
    module: nn.Module = model
    module.to(device).eval()
    return LoadedModel(module, tokenizer, str(directory), gguf)


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a model spec (as ``load_causal_lm``) without loading its weights."""
    directory, gguf, _ = locate_model(spec)
    try:
        return _tokenizer(directory, _offline_kwargs(gguf))
    except Exception as e:  # noqa: BLE001 - surface any loader failure as one line
        raise ModelLoadError(
            f"cannot load the tokenizer of {spec}: {type(e).__name__}: {e}"
        ) from None


def _offline_kwargs(gguf: str | None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf:
        kwargs["gguf_file"] = gguf
    return kwargs


def _tokenizer(directory: Path, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), **kwargs)


def model_fingerprint(model: nn.Module) -> str:
    """blake2b-128 over parameter names, shapes and fp32 values (order of named_parameters)."""
    h = hashlib.blake2b(digest_size=16)
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
