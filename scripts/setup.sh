#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install lorif into it.
# Idempotent: a second run with nothing changed takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LORIF_VENV:-.venv}
say() { echo "setup: $*" >&2; }
start=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtual environment $VENV"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.lorif-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "upgrading pip"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    say "installing ${LORIF_TORCH:-torch==2.13.0} (~1 min)"
    # torch first and pinned: this is the CPU wheel on the project's machines; an unpinned torch
    # would pull a multi-GB CUDA build. Set LORIF_TORCH to override (e.g. a CUDA wheel).
    # LORIF_TORCH_INDEX: a wheel index for torch (the Dockerfile's CPU image uses PyTorch's).
    "$VENV/bin/python" -m pip install -q ${LORIF_TORCH_INDEX:+--index-url "$LORIF_TORCH_INDEX"} \
        "${LORIF_TORCH:-torch==2.13.0}"
    # The project itself: editable with the dev, cluster (Ray Serve) and gpu (Triton, run by the
    # tests under its CPU interpreter) extras here and in CI;
    # LORIF_EDITABLE=0 and LORIF_EXTRAS="" give the runtime install of the container image.
    extras=${LORIF_EXTRAS-dev,cluster,gpu}
    target="."
    [ -z "$extras" ] || target=".[$extras]"
    say "installing lorif${extras:+ with extras $extras} and its dependencies (1-3 min)"
    if [ "${LORIF_EDITABLE:-1}" = "1" ]; then
        "$VENV/bin/python" -m pip install -q -e "$target"
    else
        "$VENV/bin/python" -m pip install -q --no-cache-dir "$target"
    fi
    touch "$stamp"
    say "python packages ready ($((SECONDS - start)) s)"
else
    say "$VENV is up to date"
fi
# Headless Chromium for the browser tests (Debian's package; Playwright drives it, it never
# downloads a browser). Skipped where it is present or where there is no apt-get; set
# LORIF_NO_CHROMIUM=1 to skip.
if [ -z "${LORIF_NO_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    echo "installing Debian's chromium for the browser tests ..."
    { $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 \
           && $SUDO apt-get install -y -q chromium >/dev/null 2>&1; }; } \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
