"""hf_magic: chat with Hugging Face models from Jupyter (``%load_ext hf_magic``, then ``%%hfchat``)."""

from __future__ import annotations

from .backend import ChatDelta, ChatRequest, GenerationParams, Usage
from .chat_models import ChatHuggingFace
from .endpoint import HuggingFaceEndpoint
from .errors import (
    ContextWindowError,
    DefaultModelMissingError,
    EndpointError,
    GenerationCancelled,
    HfMagicError,
    InvalidInputError,
    ModelNotFoundError,
    QuantizationError,
    SchemaError,
    StreamInterruptedError,
    StructuredOutputCutError,
)
from .loading import ensure_default_model as default_model_path
from .panel import ChatPanel
from .pipeline import HuggingFacePipeline
from .progress import ProgressEvent


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext hf_magic``: register the ``%%hfchat`` / ``%hfchat`` magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext hf_magic``: remove the magics (sessions stay in memory)."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "ChatDelta",
    "ChatHuggingFace",
    "ChatPanel",
    "ChatRequest",
    "ContextWindowError",
    "DefaultModelMissingError",
    "EndpointError",
    "GenerationCancelled",
    "GenerationParams",
    "HfMagicError",
    "HuggingFaceEndpoint",
    "HuggingFacePipeline",
    "InvalidInputError",
    "ModelNotFoundError",
    "ProgressEvent",
    "QuantizationError",
    "SchemaError",
    "StreamInterruptedError",
    "StructuredOutputCutError",
    "Usage",
    "default_model_path",
]
