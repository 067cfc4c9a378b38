"""What a session loads (``ModelSpec``) and the one factory that turns a spec into a chat model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..chat_models import ChatHuggingFace
from ..errors import InvalidInputError
from ..progress import ProgressCallback

Backend = Literal["pipeline", "endpoint"]
Quantize = Literal["4bit", "8bit"]
Engine = Literal["vllm", "llama.cpp"]
ENGINES: tuple[Engine, ...] = ("vllm", "llama.cpp")
"""Serving engines hf_magic starts as a child process and reaches as an endpoint (remote/engines.py)."""
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
    engine: Engine | None = None
    """An engine hf_magic starts for this model (backend "endpoint", no endpoint_url)."""
    gguf_file: str | None = None
    """The file of a GGUF repo to run on llama.cpp."""

    def __post_init__(self) -> None:
        if self.backend not in ("pipeline", "endpoint"):
            raise InvalidInputError(f"Unknown backend {self.backend!r}: use 'pipeline' or 'endpoint'.")
        if self.engine is not None:
            if self.backend != "endpoint":  # an engine is reached as an endpoint: say so wherever the spec is read
                object.__setattr__(self, "backend", "endpoint")
            if self.engine not in ENGINES:
                raise InvalidInputError(f"Unknown engine {self.engine!r}: use vllm or llama.cpp.")
            if self.endpoint_url:
                raise InvalidInputError("--engine starts a server and --endpoint-url points at one: give one of them.")
        if self.gguf_file is not None and self.engine != "llama.cpp":
            raise InvalidInputError("--gguf-file runs a file of a GGUF repo on llama.cpp: add --engine llama.cpp.")
        if self.quantize not in (None, "4bit", "8bit"):
            raise InvalidInputError(f"Unknown quantization {self.quantize!r}: use '4bit' or '8bit'.")
        if (self.backend == "endpoint" or self.engine) and self.quantize:
            raise InvalidInputError("Quantization applies to local models only: drop --quantize for an endpoint.")
        if self.dtype is not None and self.dtype not in DTYPES:
            # Checked here, not at load: transformers would fail deep inside with "torch has no attribute ...".
            raise InvalidInputError(f"Unknown dtype {self.dtype!r}: use one of {', '.join(DTYPES)}.")

    def label(self) -> str:
        """Short name for messages: ``default (pipeline)``, ``http://127.0.0.1:8000 (endpoint)``, ``default (vllm)``."""
        if self.engine:
            return f"{self.model}{'/' + self.gguf_file if self.gguf_file else ''} ({self.engine})"
        if self.backend == "endpoint":
            where = [self.provider] if self.provider and not self.endpoint_url else []
            return f"{self.endpoint_url or self.model} ({', '.join(['endpoint', *where])})"
        details = [p for p in (self.quantize, self.device, self.dtype) if p]
        return f"{self.model} ({', '.join(['pipeline', *details])})"

    def describe(self) -> str:
        if self.engine:
            return f"{self.model}{', ' + self.gguf_file if self.gguf_file else ''}, {self.engine} (started by hf_magic)"
        where = self.endpoint_url or self.provider or "local"
        parts = [self.model if self.backend == "pipeline" or not self.endpoint_url else self.endpoint_url]
        parts.append(self.backend if self.backend == "pipeline" else f"endpoint ({where})")
        parts += [p for p in (self.quantize, self.device, self.dtype) if p]
        return ", ".join(parts)


def load_chat_model(spec: ModelSpec, progress: ProgressCallback | None = None) -> ChatHuggingFace:
    """Build the chat model a spec describes (downloading and loading with progress when local; starting the
    engine, with its start-up as progress, for an engine spec)."""
    if spec.engine:
        from ..remote.engine_endpoint import EngineEndpoint

        return ChatHuggingFace(
            llm=EngineEndpoint.start(spec.engine, spec.model, gguf_file=spec.gguf_file, progress=progress)
        )
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


def release_chat_model(chat_model: ChatHuggingFace | None) -> None:
    """Free what a chat model holds outside this process: the engine hf_magic started for it stops now."""
    close = getattr(getattr(chat_model, "llm", None), "close", None)
    if callable(close):
        close()
