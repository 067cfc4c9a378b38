"""The records a session keeps and tells its views about: settings, turns and session events."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from .. import config
from ..backend import Usage
from ..progress import ProgressEvent


@dataclass
class Settings:
    """Generation settings of a session; ``None`` keeps the model's own default."""

    system_prompt: str | None = None
    temperature: float | None = None
    max_new_tokens: int | None = config.DEFAULT_MAX_NEW_TOKENS
    top_p: float | None = None
    repetition_penalty: float | None = None
    history_limit: int | None = None
    """Most recent turns sent with each message; ``None`` sends the whole conversation."""
    enable_thinking: bool | None = None
    """Ask a reasoning model to think first (True) or answer directly (False); ``None`` keeps its default."""

    def call_kwargs(self) -> dict[str, Any]:
        names = ("temperature", "max_new_tokens", "top_p", "repetition_penalty", "enable_thinking")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass
class ToolCall:
    """One tool call a model asked for, and what came of it."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    result: str | None = None
    """What went back to the model as the tool message (a result, an error, or that the user declined)."""
    status: str = "pending"
    """"ok", "error" (the tool raised, or the call was invalid), "declined" (the user skipped it), "interrupted",
    "asking" (while the user is asked), "running" (while it runs) or "pending" (not run)."""
    duration: float | None = None
    """Seconds the tool ran."""


@dataclass
class ToolStep:
    """A model step that ended in tool calls: what the model wrote and thought before asking, and the calls."""

    text: str = ""
    reasoning: str = ""
    calls: list[ToolCall] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolStep:
        calls = [
            ToolCall(**{k: v for k, v in call.items() if k in ToolCall.__dataclass_fields__})
            for call in data.get("calls") or []
        ]
        return cls(text=data.get("text") or "", reasoning=data.get("reasoning") or "", calls=calls)


@dataclass
class Turn:
    """One exchange: the user's message and the model's reply, with what it cost.

    A turn in which the model called tools holds those steps in ``steps`` (in order, each with its calls and
    their results); ``reply`` is the final answer, and ``usage`` adds up every step.
    """

    user: str
    reply: str = ""
    """The answer (what is shown as Markdown and sent back in later turns)."""
    reasoning: str = ""
    """The model's thinking before the answer, kept apart from it."""
    model: str = ""
    system_prompt: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    interrupted: bool = False
    key: str | None = None
    """Identifies the cell that sent it: re-running that cell replaces this turn."""
    started_at: float = field(default_factory=time.time)
    time_to_first_token: float | None = None
    duration: float | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    """Image content blocks sent with ``user`` (``hf_magic.images``), in order, before the text."""
    steps: list[ToolStep] = field(default_factory=list)
    """The tool-calling steps before the final reply (empty for a plain exchange)."""

    def user_content(self) -> str | list[str | dict[Any, Any]]:
        """The user's message as chat-message content: the text, or the images then the text."""
        if not self.images:
            return self.user
        parts: list[str | dict[Any, Any]] = [*self.images, {"type": "text", "text": self.user}]
        return parts

    def messages(self) -> list[BaseMessage]:
        """This turn as the langchain messages a later prompt repeats: the user's message, each tool step (an
        AIMessage with its tool calls, then one ToolMessage per call), and the reply."""
        messages: list[BaseMessage] = [HumanMessage(content=self.user_content())]
        for step in self.steps:
            thought = {"reasoning_content": step.reasoning} if step.reasoning else {}
            calls = [{"name": c.name, "args": c.args, "id": c.id, "type": "tool_call"} for c in step.calls]
            messages.append(AIMessage(content=step.text, tool_calls=calls, additional_kwargs=thought))
            for call in step.calls:
                messages.append(ToolMessage(content=call.result or "", tool_call_id=call.id, name=call.name))
        # The thinking goes with the answer; the backend sends it back only as the model's template expects.
        thought = {"reasoning_content": self.reasoning} if self.reasoning else {}
        messages.append(AIMessage(content=self.reply, additional_kwargs=thought))
        return messages

    @property
    def still_thinking(self) -> bool:
        """The reply ended inside the thinking: the token limit came first (or Stop)."""
        return bool(self.reasoning) and not self.reply.strip() and self.finish_reason in ("length", "interrupted")

    @property
    def tokens_per_second(self) -> float | None:
        if not self.usage or not self.duration or self.time_to_first_token is None:
            return None
        decode_time = self.duration - self.time_to_first_token
        return (
            (self.usage.output_tokens - 1) / decode_time if decode_time > 0 and self.usage.output_tokens > 1 else None
        )

    def to_dict(self) -> dict[str, Any]:
        from ..images import exportable_block

        data = asdict(self)
        data["usage"] = self.usage.as_usage_metadata() if self.usage else None
        data["images"] = [exportable_block(block) for block in self.images]  # embedded as data URLs
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        data = dict(data)
        usage = data.pop("usage", None)
        steps = [ToolStep.from_dict(step) for step in data.pop("steps", None) or []]
        known = {name for name in cls.__dataclass_fields__}
        turn = cls(**{key: value for key, value in data.items() if key in known}, steps=steps)
        if usage:
            reasoning = (usage.get("output_token_details") or {}).get("reasoning")
            turn.usage = Usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0), reasoning)
        return turn


@dataclass(frozen=True)
class SessionEvent:
    """What a view hears from a session: ``kind`` is one of "turn_started", "token", "reasoning" (a piece of
    the thinking), "tool" (the turn's tool steps changed: tool_loop.py), "turn_finished",
    "turn_failed", "progress", "model_loaded", "model_unloaded", "reset", "transcript_loaded", "stop_requested"
    (``stop()`` was called: whatever generates for the session stops), "notice" (a collaborator's one-line message in
    ``text``, e.g. a turn log fault), "map_finished" (a prompt over a table ran: ``text`` is its template, ``detail``
    its summary, see ``row_map.MapRun.summary``)."""

    kind: str
    turn: Turn | None = None
    text: str = ""
    progress: ProgressEvent | None = None
    error: str | None = None
    detail: dict[str, Any] | None = None
    """What a capability's event carries beyond a turn: JSON-ready, so a log can store it as it is."""


SessionListener = Callable[[SessionEvent], None]
