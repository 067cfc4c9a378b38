"""What the views may know of models: the picker's local and hub models (size, parameters, cache state, memory
fit), the devices to offer, and a model's display name.

This is the one notebook module that asks ``local.loading``: the magics and the panel ask it here, so the views
never import ``local/`` or ``remote/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import is_offline_mode

from .. import config
from ..errors import EndpointError
from ..local.loading import is_default_model, local_models
from .units import format_bytes, format_count

# Bytes per weight for the dtypes a safetensors header reports and the dtypes a user can pick.
_DTYPE_BYTES = {
    "F64": 8.0,
    "F32": 4.0,
    "F16": 2.0,
    "BF16": 2.0,
    "I64": 8.0,
    "I32": 4.0,
    "I16": 2.0,
    "I8": 1.0,
    "U8": 1.0,
    "F8_E4M3": 1.0,
    "F8_E5M2": 1.0,
    "float32": 4.0,
    "float16": 2.0,
    "bfloat16": 2.0,
}
# bitsandbytes keeps ~1 byte per weight in 8-bit and ~0.5 in 4-bit NF4, plus scales and unquantized layers.
_QUANTIZED_BYTES = {"8bit": 1.1, "4bit": 0.6}
# Activations, KV cache and allocator slack on top of the weights.
_RUNTIME_OVERHEAD = 1.2


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker.

    Attributes:
        model_id: what ``ModelSpec.model`` takes ("default", "org/name" or a folder).
        source: "embedded", "hub cache", "folder" or "hub".
        size_on_disk: bytes of weights on disk (local) or in the repo's safetensors (hub), when known.
        parameters: parameter count by safetensors dtype ("BF16" -> 134515008), when known.
        downloads: hub downloads (last 30 days), for hub search results.
        cached: True when loading needs no download.
        path: the folder it loads from, for a local model that is already on disk.
    """

    model_id: str
    source: str
    size_on_disk: int | None = None
    parameters: dict[str, int] | None = None
    downloads: int | None = None
    cached: bool = False
    path: Path | None = None

    @property
    def parameter_count(self) -> int | None:
        return sum(self.parameters.values()) if self.parameters else None

    def estimated_memory(self, dtype: str | None = None, quantize: str | None = None) -> int | None:
        """Bytes the weights take once loaded with ``dtype`` / ``quantize`` (runtime overhead included)."""
        count = self.parameter_count
        if quantize in _QUANTIZED_BYTES and count:
            weights = count * _QUANTIZED_BYTES[quantize]
        elif dtype in _DTYPE_BYTES and count:
            weights = count * _DTYPE_BYTES[dtype]
        elif self.parameters:
            weights = sum(n * _DTYPE_BYTES.get(kind, 2.0) for kind, n in self.parameters.items())
        elif self.size_on_disk:
            weights = float(self.size_on_disk)
        else:
            return None
        return int(weights * _RUNTIME_OVERHEAD)

    def label(self) -> str:
        """One line for a dropdown: id, where it comes from, size, parameters, downloads."""
        name = f"default ({display_name(self.model_id)})" if is_default_model(self.model_id) else self.model_id
        facts = [self.source]
        if self.parameter_count:
            facts.append(f"{format_count(self.parameter_count)} params")
        if self.size_on_disk:
            facts.append(format_bytes(self.size_on_disk))
        if self.downloads is not None:
            facts.append(f"{format_count(self.downloads)} downloads")
        return f"{name} · {' · '.join(facts)}"


def display_name(model_id: str | None) -> str:
    """How a reply's author is named: the embedded model's real name for its aliases, else the id as given."""
    return config.DEFAULT_MODEL_NAME if is_default_model(model_id) else (model_id or "assistant")


def device_options() -> list[str]:
    """The devices a local model can be put on here: ``cpu``, each CUDA GPU, Apple's GPU."""
    import torch

    from ..local.loading import mps_available

    cuda = [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return ["cpu", *cuda, *(["mps"] if mps_available() else [])]


def _safetensors_parameters(folder: Path | None) -> dict[str, int] | None:
    """Parameter counts from safetensors headers (reads headers only, never the weights)."""
    if folder is None or not folder.is_dir():
        return None
    from huggingface_hub import get_local_safetensors_metadata

    try:
        counts: dict[str, int] = {
            str(dtype): count for dtype, count in get_local_safetensors_metadata(folder).parameter_count.items()
        }
        return counts or None
    except Exception:  # not a safetensors model, or a partial download: the count is simply unknown
        return None


def local_choices() -> list[ModelChoice]:
    """The embedded default model and every model in the local hub cache."""
    return [
        ModelChoice(
            model_id=model.model_id,
            source=model.source,
            size_on_disk=model.size_on_disk,
            parameters=_safetensors_parameters(model.path),
            # The default is "cached" once its wheel is installed: conversion needs no network.
            cached=True,
            path=model.path,
        )
        for model in local_models()
    ]


def describe_choice(model_id: str) -> ModelChoice:
    """What is known locally about ``model_id`` (a default alias, a folder or a hub id)."""
    model_id = model_id.strip()
    for choice in local_choices():
        if choice.model_id == model_id or (is_default_model(model_id) and choice.source == "embedded"):
            return choice
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        return ModelChoice(model_id, "folder", size or None, _safetensors_parameters(folder), cached=True)
    return ModelChoice(model_id, "hub", cached=is_cached(model_id))


def is_cached(model_id: str) -> bool:
    """True when ``model_id`` loads without a download (default model, folder, or repo in the hub cache)."""
    if is_default_model(model_id) or Path(model_id).expanduser().is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # an id that is not a valid repo name is not cached either
        return False


def hub_search(query: str, limit: int = 20) -> list[ModelChoice]:
    """Text-generation models on the hub matching ``query``, most downloaded first.

    Raises:
        EndpointError: the hub is offline (HF_HUB_OFFLINE) or cannot be reached.
    """
    if is_offline_mode():
        raise EndpointError("HF_HUB_OFFLINE is set, so the hub is not searched: unset it to search hub models.")
    from huggingface_hub import HfApi

    try:
        found = HfApi().list_models(
            search=query.strip() or None,
            pipeline_tag="text-generation",
            sort="downloads",
            limit=limit,
            expand=["downloads", "safetensors"],
        )
        return [_hub_choice(info) for info in found]
    except Exception as exc:
        raise EndpointError(
            f"Searching the hub at {config.hub_endpoint()} failed ({type(exc).__name__}): check the network "
            "or HF_ENDPOINT, or type a model id."
        ) from exc


def _hub_choice(info: Any) -> ModelChoice:
    parameters = dict(info.safetensors.parameters) if getattr(info, "safetensors", None) else None
    size = int(sum(n * _DTYPE_BYTES.get(kind, 2.0) for kind, n in parameters.items())) if parameters else None
    return ModelChoice(info.id, "hub", size, parameters, downloads=info.downloads, cached=is_cached(info.id))


def available_memory(device: str | None = None) -> int | None:
    """Free bytes where the weights would go: GPU memory for a CUDA device, else RAM available to processes."""
    if device and device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                index = int(device.split(":", 1)[1]) if ":" in device else 0
                return int(torch.cuda.mem_get_info(index)[0])
        except (ImportError, RuntimeError, ValueError):
            return None
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return _meminfo_available()


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fit_summary(choice: ModelChoice, *, device: str | None, dtype: str | None, quantize: str | None) -> str:
    """One line: cached or to download, estimated memory and whether it fits in what is free."""
    from ..local.loading import default_device

    device = device or default_device()  # where a session would put it
    parts = ["cached" if choice.cached else "not cached: loading downloads it"]
    needed = choice.estimated_memory(dtype, quantize)
    free = available_memory(device)
    if needed is None:
        parts.append("size unknown")
    elif free is None:
        parts.append(f"needs ~{format_bytes(needed)}")
    else:
        verdict = "fits" if needed <= free else "does NOT fit"
        where = "GPU memory" if device and device.startswith("cuda") else "memory"
        parts.append(f"needs ~{format_bytes(needed)}, {format_bytes(free)} free {where}: {verdict}")
    return " · ".join(parts)
