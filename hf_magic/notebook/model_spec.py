"""What a session loads (``ModelSpec``) and the one factory that turns a spec into a chat model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..chat_models import ChatHuggingFace
from ..errors import InvalidInputError
from ..progress import ProgressCallback

Backend = Literal["pipeline", "endpoint"]
Quantize = Literal["4bit", "8bit"]
DTYPES = ("bfloat16", "float16", "float32", "auto")
"""What ``--dtype`` and the panel's Dtype picker accept (torch dtype names, or the checkpoint's own)."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load. Two equal specs share one loaded model; any change means a reload."""

    model: str = "default"
    backend: Backend = "pipeline"
    endpoint_url: str | None = None
    provider: str | None = None
    quantize: Quantize | None = None
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("pipeline", "endpoint"):
            raise InvalidInputError(f"Unknown backend {self.backend!r}: use 'pipeline' or 'endpoint'.")
        if self.quantize not in (None, "4bit", "8bit"):
            raise InvalidInputError(f"Unknown quantization {self.quantize!r}: use '4bit' or '8bit'.")
        if self.backend == "endpoint" and self.quantize:
            raise InvalidInputError("Quantization applies to local models only: drop --quantize for an endpoint.")
        if self.dtype is not None and self.dtype not in DTYPES:
            # Checked here, not at load: transformers would fail deep inside with "torch has no attribute ...".
            raise InvalidInputError(f"Unknown dtype {self.dtype!r}: use one of {', '.join(DTYPES)}.")

    def label(self) -> str:
        """Short name for messages: ``default (pipeline)``, ``http://127.0.0.1:8000 (endpoint)``."""
        if self.backend == "endpoint":
            where = [self.provider] if self.provider and not self.endpoint_url else []
            return f"{self.endpoint_url or self.model} ({', '.join(['endpoint', *where])})"
        details = [p for p in (self.quantize, self.device, self.dtype) if p]
        return f"{self.model} ({', '.join(['pipeline', *details])})"

    def describe(self) -> str:
        where = self.endpoint_url or self.provider or "local"
        parts = [self.model if self.backend == "pipeline" or not self.endpoint_url else self.endpoint_url]
        parts.append(self.backend if self.backend == "pipeline" else f"endpoint ({where})")
        parts += [p for p in (self.quantize, self.device, self.dtype) if p]
        return ", ".join(parts)


def load_chat_model(spec: ModelSpec, progress: ProgressCallback | None = None) -> ChatHuggingFace:
    """Build the chat model a spec describes (downloading and loading with progress when local)."""
    if spec.backend == "endpoint":
        from ..remote.endpoint import HuggingFaceEndpoint

        if spec.endpoint_url:
            # "default" means whatever the server serves: leave the model unset so the endpoint asks it.
            named = {} if spec.model == "default" else {"model": spec.model}
            llm: Any = HuggingFaceEndpoint(endpoint_url=spec.endpoint_url, **named)
        else:
            llm = HuggingFaceEndpoint(repo_id=spec.model, provider=spec.provider or "auto")
        return ChatHuggingFace(llm=llm)
    from ..local.pipeline import HuggingFacePipeline

    model_kwargs: dict[str, Any] = {}
    if spec.dtype:
        model_kwargs["dtype"] = spec.dtype
    if spec.quantize:
        model_kwargs["quantization_config"] = spec.quantize  # the fastest kind here (local/quantization.py)
    llm = HuggingFacePipeline.from_model_id(
        spec.model, task="text-generation", device=spec.device, model_kwargs=model_kwargs, progress=progress
    )
    return ChatHuggingFace(llm=llm)
