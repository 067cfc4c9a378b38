"""Compiled decode steps kept on disk, one file per model, configuration and machine, so the next kernel with
the same model skips inductor's work.

torch's public cache-artifact API does the work: after a compile, ``torch.compiler.save_cache_artifacts()``
hands back everything inductor and AOTAutograd produced (generated code, compiled libraries, graphs) as bytes;
before the next compile, ``torch.compiler.load_cache_artifacts`` puts them back into torch's local caches,
so the compile becomes cache hits. Only dynamo's tracing runs again.

A file is named after a hash of what the compiled code depends on: torch, transformers and torchao versions,
the model's configuration, dtype, quantization and embedding kind, the device, the CPU's instruction-set flags and
``ONEDNN_MAX_CPU_ISA``. Another machine, model or version never reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import config

_SUFFIX = ".torchcompile"


def cache_file(model: Any, options: dict[str, Any]) -> Path:
    """Where the compiled decode step of ``model`` with compile ``options`` is kept on this machine."""
    return config.compile_cache_dir() / f"{_fingerprint(model, options)}{_SUFFIX}"


def load(path: Path) -> bool:
    """Put the artifacts kept at ``path`` into torch's caches; whether there were any (an unreadable or stale
    file counts as none: the compile then runs in full and writes it again)."""
    import torch

    try:
        data = path.read_bytes()
    except OSError:
        return False
    try:
        return torch.compiler.load_cache_artifacts(data) is not None
    except Exception:  # written by another torch build, or cut short: compile from scratch
        return False


def save(path: Path) -> bool:
    """Write the artifacts of this process's compiles to ``path`` (atomically); whether anything was written."""
    import torch

    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        return False
    data, _ = artifacts
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=".writing-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return True


def _fingerprint(model: Any, options: dict[str, Any]) -> str:
    from .loading import cpu_flags

    parameter = next(model.parameters(), None)
    quantization = getattr(model.config, "quantization_config", None)
    described = {
        "versions": {name: _version(name) for name in ("torch", "transformers", "torchao")},
        "model": model.config.to_json_string(use_diff=False),
        "class": type(model).__name__,
        "dtype": str(getattr(model, "dtype", None)),
        "weights": type(parameter).__name__ if parameter is not None else None,
        "quantization": repr(quantization) if quantization is not None else None,
        "embeddings": type(model.get_input_embeddings()).__name__,  # int8 rows with a named quantization
        "device": str(getattr(model, "device", "cpu")),
        "attention": getattr(model.config, "_attn_implementation", None),
        "cpu": sorted(cpu_flags()),
        "isa": config.onednn_max_cpu_isa(),
        "options": options,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
