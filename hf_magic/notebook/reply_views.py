"""Where a ``%%hfchat`` reply is shown while it streams and when it is done: a notebook output or a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from .render import Reply, Streaming
from .turn_drawing import thinking_text, tool_call_text, turn_note

if TYPE_CHECKING:
    from .turns import ToolStep, Turn

_STREAM_REFRESH_SECONDS = 0.05
"""Redraw the streaming reply at most this often: one display update per token floods the frontend."""


class ReplyView(Protocol):
    """Where a reply is shown while it streams and when it is done."""

    def token(self, piece: str) -> None: ...

    def reasoning(self, piece: str) -> None:
        """A piece of the model's thinking, which comes before the answer."""
        ...

    def steps(self, turn: Turn) -> None:
        """The turn's tool steps changed (tool_loop.py): a step's text became a step, a call started or ended."""
        ...

    def finish(self, reply: Reply) -> None: ...

    def fail(self) -> None:
        """Generation stopped on an error: leave what arrived as it is."""
        ...


class NotebookReplyView:
    """Streams into one output through a display handle; the final rich reply replaces it."""

    def __init__(self, model: str, stream: bool, display: Callable[..., Any]) -> None:
        self._model, self._stream, self._display = model, stream, display
        self._handle: Any = None
        self._last = 0.0
        self._text = ""
        self._reasoning = ""
        self._steps: Sequence[ToolStep] = ()

    def steps(self, turn: Turn) -> None:
        # The text streamed so far moved into a step: the blocks draw it now, and the next step streams below them.
        self._steps, self._text, self._reasoning = list(turn.steps), turn.reply, turn.reasoning
        self._refresh(force=True)

    def token(self, piece: str) -> None:
        first = not self._text
        self._text += piece
        self._refresh(force=first and bool(self._reasoning))  # the thinking block folds as the answer starts

    def reasoning(self, piece: str) -> None:
        self._reasoning += piece
        self._refresh()

    def _refresh(self, force: bool = False) -> None:
        if not self._stream:
            return
        now = time.perf_counter()
        view = Streaming(self._text, self._model, reasoning=self._reasoning, steps=self._steps)
        if self._handle is None:
            self._handle = self._display(view, display_id=True)
            self._last = now
        elif force or now - self._last >= _STREAM_REFRESH_SECONDS:
            self._handle.update(view)
            self._last = now

    def finish(self, reply: Reply) -> None:
        if self._handle is None:
            self._display(reply)
        else:
            self._handle.update(reply)

    def fail(self) -> None:
        if self._handle is not None:
            self._handle.update(
                Streaming(self._text, self._model, cursor=False, reasoning=self._reasoning, steps=self._steps)
            )


class TerminalReplyView:
    """Plain text: tokens are written as they come, the usage line after the reply."""

    def __init__(self, stream: bool, out: TextIO | None = None) -> None:
        self._stream = stream
        self._out = out
        self._wrote = False
        self._thinking = False
        self._calls_shown: set[str] = set()

    def steps(self, turn: Turn) -> None:
        """Each call once, when it has ended: its line, status and time, then the result's first lines."""
        for step in turn.steps:
            for call in step.calls:
                if call.status in ("pending", "asking", "running") or call.id in self._calls_shown:
                    continue
                self._calls_shown.add(call.id)
                self._end_thinking()
                self.out.write(("\n" if self._wrote else "") + tool_call_text(call) + "\n")
                self.out.flush()
                self._wrote = False  # the next step's text starts on a fresh line

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    def token(self, piece: str) -> None:
        if self._stream:
            self._end_thinking()
            self.out.write(piece)
            self.out.flush()
            self._wrote = True

    def reasoning(self, piece: str) -> None:
        # Set apart from the answer: between [thinking] markers, each line indented.
        if not self._stream:
            return
        if not self._thinking:
            self.out.write("[thinking]\n  ")
            self._thinking = True
        self.out.write(piece.replace("\n", "\n  "))
        self.out.flush()
        self._wrote = True

    def _end_thinking(self) -> None:
        if self._thinking:
            self.out.write("\n[/thinking]\n")
            self._thinking = False

    def finish(self, reply: Reply) -> None:
        turn = reply.turn
        self._end_thinking()
        if not self._wrote:
            if turn.reasoning.strip():
                self.out.write(thinking_text(turn.reasoning) + "\n")
            self.out.write(turn.reply)
        self.out.write("\n")
        note = turn_note(turn)
        if note:
            self.out.write(note + "\n")
        if turn.interrupted:
            self.out.write("[interrupted]\n")
        if reply.usage:
            self.out.write(f"{reply.usage}\n")
        self.out.flush()

    def fail(self) -> None:
        self._end_thinking()
        if self._wrote:
            self.out.write("\n")
            self.out.flush()
