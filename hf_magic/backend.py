"""The interface between ChatHuggingFace and its backends (local pipeline, remote endpoint).

A backend receives OpenAI-shaped message dicts plus generation parameters and returns text deltas,
tool calls, usage and a finish reason. It never displays anything and knows nothing of langchain
messages; ``chat_models`` converts at the boundary.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from . import config
from .errors import HfMagicError, InvalidInputError


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings; ``None`` means "the backend's default"."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    do_sample: bool | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    """OpenAI's penalty on tokens already in the reply (-2..2); servers apply it, the local pipeline refuses it."""
    frequency_penalty: float | None = None
    """OpenAI's penalty growing with a token's count in the reply (-2..2); as ``presence_penalty``."""
    logit_bias: dict[int, float] | None = None
    """Added to these token ids' logits before sampling (-100..100), as OpenAI's ``logit_bias``."""

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and (
            not isinstance(self.max_new_tokens, int)
            or isinstance(self.max_new_tokens, bool)
            or self.max_new_tokens <= 0
        ):
            raise InvalidInputError(
                f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}: pass e.g. max_new_tokens=256."
            )
        if self.temperature is not None and self.temperature < 0:
            raise InvalidInputError(f"temperature must be >= 0, got {self.temperature!r}: use 0 for greedy decoding.")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p!r}.")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value is not None and not -2 <= value <= 2:
                raise InvalidInputError(f"{name} must be in [-2, 2], got {value!r}.")
        if self.logit_bias is not None:
            object.__setattr__(self, "logit_bias", _checked_logit_bias(self.logit_bias))

    def merged(self, override: GenerationParams) -> GenerationParams:
        """These params with every field that ``override`` sets taken from it."""
        changes = {
            name: value
            for name, value in vars(override).items()
            if value is not None and not (name == "stop" and not value) and not (name == "logprobs" and not value)
        }
        if override.temperature is not None and override.do_sample is None:
            # A temperature given at a more specific level decides sampling, over an older do_sample.
            changes["do_sample"] = override.temperature > 0
        return replace(self, **changes)

    @property
    def token_budget(self) -> int:
        """The most tokens a reply may have: ``max_new_tokens``, else the one default every backend uses."""
        return self.max_new_tokens or config.DEFAULT_MAX_NEW_TOKENS

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic: explicit ``temperature=0`` or ``do_sample=False``."""
        if self.temperature == 0:
            return True
        if self.do_sample is not None:
            return not self.do_sample
        return self.temperature is None


def _checked_logit_bias(bias: Any) -> dict[int, float]:
    """``bias`` with int token ids (JSON gives them as strings) and float biases in OpenAI's range."""
    example = "e.g. logit_bias={50256: -100}"
    if not isinstance(bias, dict):
        raise InvalidInputError(f"logit_bias must map token ids to biases, got {type(bias).__name__}: {example}.")
    checked: dict[int, float] = {}
    for token, value in bias.items():
        try:
            token_id, amount = int(token), float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"logit_bias entry {token!r}: {value!r} is not token id: number; {example}."
            ) from None
        if token_id < 0 or not -100 <= amount <= 100:
            raise InvalidInputError(
                f"logit_bias entry {token!r}: {value!r} is out of range (ids >= 0, biases -100..100)."
            )
        checked[token_id] = amount
    return checked


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int | None = None
    """How many of ``output_tokens`` the model spent thinking, where known."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_usage_metadata(self) -> dict[str, Any]:
        """langchain-core's ``UsageMetadata`` shape; thinking as ``output_token_details["reasoning"]``."""
        metadata: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.reasoning_tokens is not None:
            metadata["output_token_details"] = {"reasoning": self.reasoning_tokens}
        return metadata


@dataclass
class ChatRequest:
    """One call to a backend: OpenAI-shaped ``messages`` and what to do with them."""

    messages: list[dict[str, Any]]
    params: GenerationParams = field(default_factory=GenerationParams)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    thinking: bool | None = None
    """Ask a reasoning model to think first (True) or answer directly (False); ``None`` keeps its default."""
    reasoning_effort: str | None = None
    """How hard a model that takes it (gpt-oss) thinks: "low", "medium" or "high"."""


@dataclass
class ChatDelta:
    """A piece of a reply (streaming) or a whole reply.

    ``tool_calls`` holds complete parsed calls ``{"id", "name", "args"}``; ``invalid_tool_calls``
    the ones whose arguments did not parse; ``tool_call_chunks`` partial calls from a stream.
    ``usage`` and ``finish_reason`` come on the last delta of a reply. ``reasoning`` is the model's
    thinking, kept apart from ``text`` (the answer).
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_call_chunks: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: list[dict[str, Any]] | None = None
    model_name: str | None = None


@runtime_checkable
class ChatBackend(Protocol):
    """What ChatHuggingFace needs from a backend."""

    @property
    def model_name(self) -> str: ...

    def chat(self, request: ChatRequest) -> ChatDelta:
        """The whole reply at once."""
        ...

    def stream_chat(self, request: ChatRequest) -> Iterator[ChatDelta]:
        """The reply as it is generated; the last delta carries usage and finish reason."""
        ...

    def astream_chat(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """``stream_chat`` without blocking the event loop; cancelling the task stops generation."""
        ...

    async def achat(self, request: ChatRequest) -> ChatDelta: ...


@runtime_checkable
class BatchChatBackend(Protocol):
    """Optional: a backend that answers many independent requests faster together than one by one (the local
    pipeline, in padded batches). ``ChatHuggingFace.batch_deltas`` uses it; for other backends it sends the
    requests concurrently instead (``concurrent_chat.py``)."""

    def batch_chat(
        self, requests: Sequence[ChatRequest], *, batch_size: int | None = None, cancel: threading.Event | None = None
    ) -> Iterator[tuple[int, ChatDelta | HfMagicError]]:
        """Each request's whole reply (or the error that kept it from running) as ``(index, reply)``, in the order
        they finish; ``cancel`` or closing the iterator stops what is still generating."""
        ...


def join_deltas(deltas: list[ChatDelta]) -> ChatDelta:
    """Collapse a stream into one reply: text concatenated, last usage and finish reason kept."""
    joined = ChatDelta()
    pieces: list[str] = []
    thoughts: list[str] = []
    for delta in deltas:
        pieces.append(delta.text)
        thoughts.append(delta.reasoning)
        joined.tool_calls.extend(delta.tool_calls)
        joined.invalid_tool_calls.extend(delta.invalid_tool_calls)
        if delta.logprobs:
            joined.logprobs = (joined.logprobs or []) + delta.logprobs
        joined.finish_reason = delta.finish_reason or joined.finish_reason
        joined.usage = delta.usage or joined.usage
        joined.model_name = delta.model_name or joined.model_name
    joined.text = "".join(pieces)
    joined.reasoning = "".join(thoughts)
    return joined
