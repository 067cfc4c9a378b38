"""Thinking kept apart from the answer: incremental reply parsers and the stream filter that applies them.

A reasoning model writes its thinking before the answer, most often as ``<think>...</think>`` (Qwen3,
SmolLM3, DeepSeek-R1 distills); some chat templates pre-write ``<think>`` so the reply only closes it.
Parsers here take a reply's text piece by piece and say, for each piece, what is thinking and what is
answer, holding back a partial tag until the next piece decides it. Both backends use them: the local
pipeline on the decoded text, the endpoint on ``content`` from servers that write the thinking inline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .backend import ChatDelta

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

STILL_THINKING_NOTE = "The model was still thinking when it reached max_new_tokens: raise max_new_tokens."


@dataclass
class ReplyParts:
    """What one piece of a reply turned out to be: answer text and thinking."""

    text: str = ""
    reasoning: str = ""


@dataclass
class ReplyEnd(ReplyParts):
    """What was held back when the reply ended, and the tool calls the parser itself read."""

    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)
    still_thinking: bool = False
    """The reply ended inside the thinking (the token limit, or Stop)."""


class ReplyParser(Protocol):
    """Splits a reply, given piece by piece, into thinking, answer and (for some formats) tool calls."""

    keeps_special_tokens: bool
    """The format is written in special tokens (gpt-oss): decode without skipping them."""
    reads_tool_calls: bool
    """The parser reads tool calls itself, so the answer text needs no tool-call parsing after it."""

    def push(self, text: str) -> ReplyParts: ...

    def finish(self) -> ReplyEnd: ...


def partial_suffix(text: str, markers: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` could be the start of one of ``markers``."""
    for size in range(min(max(len(m) for m in markers) - 1, len(text)), 0, -1):
        tail = text[-size:]
        if any(marker.startswith(tail) for marker in markers):
            return size
    return 0


class ThinkTagParser:
    """``<think>thinking</think>answer``: a reply whose thinking comes first, in tags.

    Only a reply that *starts* with the open tag (or follows a prompt that wrote it, ``thinking=True``)
    thinks: a tag later in an answer is the answer's text. The whitespace between the close tag and
    the answer is dropped; everything else lands in exactly one of ``reasoning`` and ``text``.
    """

    keeps_special_tokens = False
    reads_tool_calls = False

    def __init__(self, thinking: bool = False, open_tag: str = THINK_OPEN, close_tag: str = THINK_CLOSE) -> None:
        self._open, self._close = open_tag, close_tag
        self._state = "thinking" if thinking else "start"
        self._held = ""

    @property
    def thinking(self) -> bool:
        return self._state == "thinking"

    def push(self, text: str) -> ReplyParts:
        parts = ReplyParts()
        held = self._held + text
        while held:
            if self._state == "start":
                stripped = held.lstrip()
                if stripped.startswith(self._open):
                    self._state, held = "thinking", stripped[len(self._open) :]
                elif self._open.startswith(stripped):
                    break  # empty so far, or a partial open tag: not decided yet
                else:
                    self._state = "answer"
            elif self._state == "thinking":
                end = held.find(self._close)
                if end >= 0:
                    parts.reasoning += held[:end]
                    self._state, held = "after", held[end + len(self._close) :]
                    continue
                keep = partial_suffix(held, (self._close,))
                parts.reasoning += held[: len(held) - keep]
                held = held[len(held) - keep :]
                break
            elif self._state == "after":
                held = held.lstrip()
                if held:
                    self._state = "answer"
            else:
                parts.text += held
                held = ""
        self._held = held
        return parts

    def finish(self) -> ReplyEnd:
        held, self._held = self._held, ""
        if self._state == "thinking":
            return ReplyEnd(reasoning=held, still_thinking=True)
        return ReplyEnd(text=held if self._state != "after" else "")


def split_reasoning(text: str, thinking: bool = False) -> tuple[str, str]:
    """A whole reply as (thinking, answer).

    Example:
        >>> split_reasoning("<think>Two plus two. </think>The answer is 4.")
        ('Two plus two. ', 'The answer is 4.')
    """
    parser = ThinkTagParser(thinking=thinking)
    first, end = parser.push(text), parser.finish()
    return first.reasoning + end.reasoning, first.text + end.text


class ReplySplitter:
    """Applies a ``ReplyParser`` to a stream of ChatDeltas, in place.

    ``count_tokens`` turns the whole thinking into a token count for ``Usage.reasoning_tokens`` (the
    local tokenizer); without it the count the server sent, if any, is kept.
    """

    def __init__(self, parser: ReplyParser, count_tokens: Callable[[str], int] | None = None) -> None:
        self.parser = parser
        self._count = count_tokens
        self._reasoning: list[str] = []
        self.still_thinking = False

    def apply(self, delta: ChatDelta) -> bool:
        """Split ``delta``'s text; whether the delta still carries anything."""
        parts = self.parser.push(delta.text)
        delta.text, delta.reasoning = parts.text, delta.reasoning + parts.reasoning
        if delta.finish_reason is not None:
            end = self.parser.finish()
            self.still_thinking = end.still_thinking
            delta.text += end.text
            delta.reasoning += end.reasoning
            delta.tool_calls = [*delta.tool_calls, *end.tool_calls]
            delta.invalid_tool_calls = [*delta.invalid_tool_calls, *end.invalid_tool_calls]
            if end.tool_calls and delta.finish_reason == "stop":
                delta.finish_reason = "tool_calls"
        self._reasoning.append(delta.reasoning)
        thought = "".join(self._reasoning)
        if delta.usage is not None and self._count is not None and thought:
            # The thinking re-tokenized (its tags not counted); never more than was generated.
            delta.usage.reasoning_tokens = min(self._count(thought), delta.usage.output_tokens)
        return bool(
            delta.text or delta.reasoning or delta.tool_call_chunks or delta.logprobs or delta.finish_reason is not None
        )


def split_stream(deltas: Iterator[ChatDelta], splitter: ReplySplitter) -> Iterator[ChatDelta]:
    """``deltas`` with each one's text split into thinking and answer by ``splitter``."""
    for delta in deltas:
        if splitter.apply(delta):
            yield delta


async def asplit_stream(deltas: AsyncIterator[ChatDelta], splitter: ReplySplitter) -> AsyncIterator[ChatDelta]:
    """``split_stream`` for an async stream."""
    async for delta in deltas:
        if splitter.apply(delta):
            yield delta
