"""A model's streamed reply written into a Turn as it comes: text, thinking, usage and the tool calls it asks for;
and the seam through which a reply may take several model calls (``Responder``: the tool loop is one)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.messages import BaseMessage

from ..backend import ChatDelta, Usage
from .turns import SessionEvent, Turn


@dataclass
class ReplyCallbacks:
    """Who hears a reply as it streams: the sending view (``on_token``, ``on_reasoning``) and the session's
    listeners (``emit``)."""

    emit: Callable[[SessionEvent], None]
    on_token: Callable[[str], None] | None = None
    on_reasoning: Callable[[str], None] | None = None


@dataclass
class StepOutcome:
    """How one model call ended: whether anything came, and the tool calls it asked for (parsed and not)."""

    answered: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage | None = None


def stream_into_turn(
    deltas: Iterable[ChatDelta],
    turn: Turn,
    callbacks: ReplyCallbacks,
    cancel: threading.Event,
    start: float,
) -> StepOutcome:
    """Consume ``deltas``, appending the answer to ``turn.reply`` and the thinking to ``turn.reasoning``.

    The turn's time to first token counts from ``start``; its finish reason and model come from the last delta,
    and ``turn.interrupted`` is set when ``cancel`` was set meanwhile (the loop stops at the next delta).
    The step's own usage is returned, not added to the turn: a caller with several steps adds them up.
    """
    outcome = StepOutcome()
    chunks: list[dict[str, Any]] = []
    for delta in deltas:
        outcome.answered = True
        if delta.reasoning:
            _first_token(turn, start)
            turn.reasoning += delta.reasoning
            if callbacks.on_reasoning:
                callbacks.on_reasoning(delta.reasoning)
            callbacks.emit(SessionEvent("reasoning", turn=turn, text=delta.reasoning))
        if delta.text:
            _first_token(turn, start)
            turn.reply += delta.text
            if callbacks.on_token:
                callbacks.on_token(delta.text)
            callbacks.emit(SessionEvent("token", turn=turn, text=delta.text))
        outcome.tool_calls += delta.tool_calls
        outcome.invalid_tool_calls += delta.invalid_tool_calls
        chunks += delta.tool_call_chunks
        if delta.usage is not None:
            outcome.usage = replace(delta.usage)  # the step's own copy: totals add these up
        if delta.finish_reason:
            turn.finish_reason = delta.finish_reason
            turn.model = delta.model_name or turn.model
        if cancel.is_set():
            turn.interrupted = True
            break
    if chunks:  # a server streams its calls in pieces (an endpoint): whole calls once the stream is done
        calls, invalid = assembled_tool_calls(chunks)
        outcome.tool_calls += calls
        outcome.invalid_tool_calls += invalid
    return outcome


def assembled_tool_calls(chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Streamed tool-call pieces (``ChatDelta.tool_call_chunks``) as whole calls and invalid ones, joined by their
    index and parsed the way langchain-core joins ``AIMessageChunk``s."""
    from langchain_core.messages import AIMessageChunk

    joined = AIMessageChunk(content="")
    for chunk in chunks:
        joined += AIMessageChunk(content="", tool_call_chunks=[chunk])  # type: ignore[list-item]
    return [dict(call) for call in joined.tool_calls], [dict(call) for call in joined.invalid_tool_calls]


@dataclass
class ReplyContext:
    """What a session hands the code that writes one reply into ``turn``: the conversation so far (``messages``,
    ending with the user's message), the call's settings (``kwargs``), who listens, and ``stream``, which asks
    the session's model for one reply to any messages and settings."""

    turn: Turn
    messages: list[BaseMessage]
    kwargs: dict[str, Any]
    callbacks: ReplyCallbacks
    cancel: threading.Event
    start: float
    stream: Callable[[list[BaseMessage], dict[str, Any]], Iterator[ChatDelta]]

    def step(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> StepOutcome:
        """One model call streamed into the turn; its usage is added to the turn's."""
        outcome = stream_into_turn(self.stream(messages, kwargs), self.turn, self.callbacks, self.cancel, self.start)
        self.turn.usage = add_usage(self.turn.usage, outcome.usage)
        return outcome


Responder = Callable[[ReplyContext], None]
"""Writes the reply into ``context.turn`` with one model call or several (a tool loop). A KeyboardInterrupt it
lets through marks the turn interrupted; anything else it raises fails the turn."""


def single_reply(context: ReplyContext) -> None:
    """The plain reply: one model call on the conversation as it is."""
    context.step(context.messages, context.kwargs)


def add_usage(total: Usage | None, step: Usage | None) -> Usage | None:
    """``total`` with a step's usage added (a turn with tool steps costs all its model calls)."""
    if step is None:
        return total
    if total is None:
        return replace(step)
    reasoning = (
        None
        if total.reasoning_tokens is None and step.reasoning_tokens is None
        else (total.reasoning_tokens or 0) + (step.reasoning_tokens or 0)
    )
    return Usage(total.input_tokens + step.input_tokens, total.output_tokens + step.output_tokens, reasoning)


def _first_token(turn: Turn, start: float) -> None:
    if turn.time_to_first_token is None:
        turn.time_to_first_token = time.perf_counter() - start
