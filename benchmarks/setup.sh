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
# The paths section's anchor: llama.cpp on the model wheel's GGUF. Built once per machine with GGML_NATIVE=OFF
# (SSE4.2/AVX/AVX2/FMA/F16C, no AVX512 or AMX code paths: a -march=native build segfaulted in batched prompt
# evaluation on an AMX CPU) and kept under ~/.cache/hf_magic/wheels; scripts/install_llama_cpp.sh does the same
# when the branch that brings it is merged.
if [ -x "$root/scripts/install_llama_cpp.sh" ]; then
    PYTHON="$bench/bin/python" "$root/scripts/install_llama_cpp.sh"
else
    cache="${HF_MAGIC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hf_magic}"
    wheel=$(ls "$cache"/wheels/llama-cpp-python-0.3.36-*/llama_cpp_python-0.3.36-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
        mkdir -p "$cache/wheels/llama-cpp-python-0.3.36-native-off"
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" nice -n 10 \
            "$bench/bin/pip" wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
            "llama-cpp-python==0.3.36" -w "$cache/wheels/llama-cpp-python-0.3.36-native-off"
        wheel=$(ls "$cache"/wheels/llama-cpp-python-0.3.36-native-off/*.whl | head -1)
    fi
    "$bench/bin/pip" install -q "$wheel"
fi
echo "Benchmark environment ready: $bench/bin/python benchmarks/run.py"
