"""hf_magic: chat with Hugging Face models from Jupyter (``%load_ext hf_magic``, then ``%%hfchat``).

The public names resolve on first use, so ``import hf_magic`` loads neither ipywidgets nor torch nor
transformers: a kernel that only runs ``%load_ext hf_magic`` pays for the panel or a model when it uses one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import ChatDelta, ChatRequest, GenerationParams, Usage
    from .chat_models import ChatHuggingFace
    from .errors import (
        ContextWindowError,
        DefaultModelMissingError,
        EndpointError,
        EngineError,
        GenerationCancelled,
        HfMagicError,
        ImageError,
        InvalidInputError,
        ModelNotFoundError,
        QuantizationError,
        SchemaError,
        StreamInterruptedError,
        StructuredOutputCutError,
    )
    from .images import image_block
    from .local.loading import ensure_default_model as default_model_path
    from .local.pipeline import HuggingFacePipeline
    from .notebook.map_cell import map_rows
    from .notebook.panel import ChatPanel
    from .progress import ProgressEvent
    from .remote.endpoint import HuggingFaceEndpoint
    from .remote.engine_endpoint import EngineEndpoint

from .local.quantization import silence_torchao_import_noise

silence_torchao_import_noise()  # before anything imports transformers' models, which import torchao

# Public name -> (module, attribute in it).
_LAZY: dict[str, tuple[str, str]] = {
    **{name: ("backend", name) for name in ("ChatDelta", "ChatRequest", "GenerationParams", "Usage")},
    "ChatHuggingFace": ("chat_models", "ChatHuggingFace"),
    "HuggingFaceEndpoint": ("remote.endpoint", "HuggingFaceEndpoint"),
    "EngineEndpoint": ("remote.engine_endpoint", "EngineEndpoint"),
    **{
        name: ("errors", name)
        for name in (
            "ContextWindowError",
            "DefaultModelMissingError",
            "EndpointError",
            "EngineError",
            "GenerationCancelled",
            "HfMagicError",
            "ImageError",
            "InvalidInputError",
            "ModelNotFoundError",
            "QuantizationError",
            "SchemaError",
            "StreamInterruptedError",
            "StructuredOutputCutError",
        )
    },
    "default_model_path": ("local.loading", "ensure_default_model"),
    "image_block": ("images", "image_block"),
    "ChatPanel": ("notebook.panel", "ChatPanel"),
    "map_rows": ("notebook.map_cell", "map_rows"),
    "HuggingFacePipeline": ("local.pipeline", "HuggingFacePipeline"),
    "ProgressEvent": ("progress", "ProgressEvent"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'hf_magic' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext hf_magic``: register the ``%%hfchat`` / ``%hfchat`` magics."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext hf_magic``: remove the magics (sessions stay in memory)."""
    from .notebook.magics import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "ChatDelta",
    "ChatHuggingFace",
    "ChatPanel",
    "ChatRequest",
    "ContextWindowError",
    "DefaultModelMissingError",
    "EndpointError",
    "EngineEndpoint",
    "EngineError",
    "GenerationCancelled",
    "GenerationParams",
    "HfMagicError",
    "HuggingFaceEndpoint",
    "HuggingFacePipeline",
    "ImageError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ProgressEvent",
    "QuantizationError",
    "SchemaError",
    "StreamInterruptedError",
    "StructuredOutputCutError",
    "Usage",
    "default_model_path",
    "image_block",
    "map_rows",
]
