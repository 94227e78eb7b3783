#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install lorif into it.
# Idempotent: a second run with nothing changed takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LORIF_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.lorif-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first and pinned: this is the CPU wheel on the project's machines; an unpinned torch
    # would pull a multi-GB CUDA build. Set LORIF_TORCH to override (e.g. a CUDA wheel).
    "$VENV/bin/python" -m pip install -q "${LORIF_TORCH:-torch==2.13.0}"
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    touch "$stamp"
fi
