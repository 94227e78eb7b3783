#!/usr/bin/env bash
# The separate benchmark environment for the peer libraries (benchmarks/lds/peers.py):
# this project (for the settings' data, tokenizer and model) + dattri + kronfluence on torch 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${LORIF_PEERS_VENV:-.venv-peers}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e .
# kronfluence 1.0.1 declares torchvision, which its code never imports; PyPI's torchvision would
# move torch to a 5.5 GB CUDA build. dattri 0.3.0 declares pretty_midi (its music benchmark only).
# Install both without their declared dependencies, then the ones they import.
"${PIP[@]}" --no-deps kronfluence==1.0.1 dattri==0.3.0
"${PIP[@]}" "accelerate>=0.31" "einops>=0.8" "einconv>=0.1" "opt-einsum>=3.3" \
    "safetensors>=0.4.2" "tqdm>=4.66.4" "scipy>=1.11" pyyaml scikit-learn
"$VENV/bin/python" -c "import dattri, kronfluence, indexer; print('peers venv ready:', '$VENV')"
