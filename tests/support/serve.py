"""A real OpenAI-compatible server for tests and benchmarks: ``transformers serve`` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import stop_process, wait_until_answers

READY_TIMEOUT_S = 180.0
"""Loading the default model takes ~15 s on 2 cores; a loaded machine needs more."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _transformers_cli() -> str:
    beside_python = Path(sys.executable).with_name("transformers")
    found = str(beside_python) if beside_python.is_file() else shutil.which("transformers")
    if not found:
        raise RuntimeError('The `transformers` command is missing: pip install "transformers[serving]".')
    return found


@contextlib.contextmanager
def serve_transformers(model_dir: str | Path, port: int | None = None, *extra_args: str) -> Iterator[str]:
    """Run ``transformers serve <model_dir>`` on 127.0.0.1 until the block ends; yields its base URL.

    The server is pinned to ``model_dir``: requests must name the model as ``str(model_dir)`` (what
    ``GET /v1/models`` lists). Raises RuntimeError, with the server's log tail, if it does not come up.

    Example:
        >>> with serve_transformers(ensure_default_model()) as url:
        ...     HuggingFaceEndpoint(endpoint_url=url).invoke("Hi")
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [_transformers_cli(), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), *extra_args]
    command += ["--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_answers(f"{url}/health", process, "transformers serve", READY_TIMEOUT_S, lambda: _tail(log))
            yield url
        finally:
            stop_process(process, timeout=15)


def _tail(log: object) -> str:
    log.seek(0)  # type: ignore[attr-defined]
    return log.read()[-2000:]  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def serve_url() -> Iterator[str]:
    """Base URL of ``transformers serve`` running the embedded default model, for the whole session."""
    from hf_magic.local.loading import ensure_default_model

    with serve_transformers(ensure_default_model()) as url:
        yield url
