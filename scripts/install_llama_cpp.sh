#!/usr/bin/env bash
# Installs llama-cpp-python (with its server) into ./.venv (or $PYTHON's environment) from a wheel built once per machine and kept
# under ~/.cache/hf_magic/wheels, so reruns do not compile llama.cpp again (about 7 minutes on 2 cores).
#
# Build settings, and why:
#   GGML_NATIVE=OFF  llama.cpp's default (-march=native) builds for the compiling CPU only, and on an Intel AMX
#                    CPU that build segfaulted in batched prompt evaluation (its AMX code path). With NATIVE off,
#                    ggml turns on SSE4.2/AVX/AVX2/BMI2/FMA/F16C and leaves AVX512 and AMX off: one library that
#                    runs alike on AMX, AVX512 and AVX2 machines (any x86-64 CPU since Haswell / Zen). Decode is
#                    bound by memory bandwidth, so AVX512 would add little. Runtime variant dispatch
#                    (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS) is no option: llama-cpp-python installs only the
#                    plain ggml-cpu library and never calls ggml_backend_load_all, and the variants would compile
#                    the CPU backend ~8 times.
#   LLAVA_BUILD=OFF  the multimodal library (mtmd) is imported only by llama-cpp-python's vision chat handlers,
#                    which hf_magic does not use; skipping it shortens the build.
# Usage: scripts/install_llama_cpp.sh   (PYTHON=/path/to/python to install elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
version="0.3.36"
cmake_args="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
python="${PYTHON:-.venv/bin/python}"
cache="${HF_MAGIC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hf_magic}"
tag=$(printf '%s' "$cmake_args" | sha256sum | cut -c1-12)
wheels="$cache/wheels/llama-cpp-python-$version-$tag"
pip=("$python" -m pip --disable-pip-version-check -q)
if ! ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "== building llama-cpp-python $version ($cmake_args) into $wheels: about 7 minutes on 2 cores, once"
    mkdir -p "$wheels.tmp"
    started=$(date +%s)
    # --no-cache-dir: pip's own wheel cache ignores CMAKE_ARGS and could hand back a build with other flags.
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" nice -n 10 \
        "${pip[@]}" wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
        "llama-cpp-python==$version" -w "$wheels.tmp"
    rm -rf "$wheels" && mv "$wheels.tmp" "$wheels"
    echo "== built in $(( $(date +%s) - started )) s"
fi
# The [server] extra: hf_magic runs llama.cpp as llama-cpp-python's OpenAI server (uvicorn, fastapi, sse-starlette).
wheel=$(ls "$wheels"/llama_cpp_python-"$version"-*.whl | head -1)
"${pip[@]}" install "llama_cpp_python[server] @ file://$wheel"
