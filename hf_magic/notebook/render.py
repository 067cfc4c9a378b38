"""Display bundles (text/plain, text/markdown, text/html) for what a cell shows: a reply, the reply while it streams,
a transcript, usage, the images sent, errors and tables. The turns inside them are drawn by turn_drawing.py."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .model_catalog import display_name
from .turn_drawing import (
    TURN_CSS,
    image_labels,
    images_html,
    markdown_to_html,
    thinking_block_html,
    thinking_text,
    tool_steps_html,
    tool_steps_text,
    transcript_markdown,
    turn_html,
    turn_markdown,
    turn_note,
    turn_text,
)

if TYPE_CHECKING:
    from ..backend import Usage
    from .turns import ToolStep, Turn

MimeBundle = tuple[dict[str, str], dict[str, Any]]


# ---------------------------------------------------------------------------------- usage
def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def usage_line(
    turn: Turn,
    session_total: Usage | None = None,
    context: tuple[int, int | None] | None = None,
) -> str:
    """One line on what a reply cost: tokens, time to first token, speed, session totals, context fill."""
    parts: list[str] = [turn.model or "model"]
    if turn.usage:
        parts.append(f"in {turn.usage.input_tokens} · out {turn.usage.output_tokens} · total {turn.usage.total_tokens}")
    if turn.time_to_first_token is not None:
        parts.append(f"first token {_fmt_seconds(turn.time_to_first_token)}")
    speed = turn.tokens_per_second
    if speed is not None:
        parts.append(f"{speed:.1f} tok/s")
    if session_total is not None:
        parts.append(f"session {session_total.total_tokens} tokens")
    if context is not None:
        used, limit = context
        parts.append(f"context {used}/{limit} ({used / limit:.0%})" if limit else f"context {used}")
    return " | ".join(parts)


def _usage_metadata(turn: Turn) -> dict[str, Any]:
    return {
        "model": turn.model,
        "usage": turn.usage.as_usage_metadata() if turn.usage else None,
        "time_to_first_token": turn.time_to_first_token,
        "tokens_per_second": turn.tokens_per_second,
        "finish_reason": turn.finish_reason,
        "interrupted": turn.interrupted,
    }


@dataclass
class SentImages:
    """Thumbnails of the images a ``%%hfchat`` cell sends, shown above its reply."""

    images: list[dict[str, Any]]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {
            "text/plain": "\n".join(image_labels(self.images)),
            "text/html": images_html(self.images),
        }

    def __repr__(self) -> str:
        return "\n".join(image_labels(self.images))


@dataclass
class Reply:
    """A finished (or interrupted) reply as shown under a ``%%hfchat`` cell, with its usage line."""

    turn: Turn
    usage: str = ""
    format: str = "markdown"
    session: str = "default"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> MimeBundle:
        note = turn_note(self.turn)
        text = self.turn.reply.strip() + (f"\n{note}" if note else "")
        if self.turn.reasoning.strip():
            text = f"{thinking_text(self.turn.reasoning)}\n\n{text}"
        if self.turn.steps:
            text = f"{tool_steps_text(self.turn.steps)}\n\n{text}"
        text += "\n[interrupted]" if self.turn.interrupted else ""
        if self.usage:
            text += f"\n\n{self.usage}"
        data = {"text/plain": text}
        if self.format == "markdown":
            markdown = turn_markdown(self.turn, include_user=False).split("\n\n", 1)[1]
            data["text/markdown"] = markdown + (f"\n\n`{self.usage}`" if self.usage else "")
            body = turn_html(self.turn, include_user=False, meta=False)
            usage = f'<div class="hfm-usage">{html.escape(self.usage)}</div>' if self.usage else ""
            data["text/html"] = TURN_CSS + body + usage
        # The exchange itself rides along in the metadata, so that a saved notebook gives it back exactly.
        exchange: dict[str, Any] = {
            "user": self.turn.user,
            "reply": self.turn.reply,
            "reasoning": self.turn.reasoning,
            "system_prompt": self.turn.system_prompt,
        }
        if self.turn.images:  # how many, not the pixels: restore says what it cannot give back
            exchange["images"] = len(self.turn.images)
        if self.turn.steps:  # the tool calls and their results, which later turns send again
            exchange["steps"] = [asdict(step) for step in self.turn.steps]
        return data, {"hf_magic": {**_usage_metadata(self.turn), **exchange, "session": self.session}}

    def __repr__(self) -> str:
        return self._repr_mimebundle_()[0]["text/plain"]


@dataclass
class Streaming:
    """The reply while it is being generated: plain text so that each update is cheap."""

    text: str
    model: str = ""
    cursor: bool = True
    """False once generation stopped on an error: the partial text stays, without the cursor."""
    reasoning: str = ""
    """The thinking so far: shown open above the answer until the answer starts, then folded."""
    steps: Sequence[ToolStep] = ()
    """The tool steps so far (tool_loop.py), drawn above the text as collapsible blocks."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        tail = " ▌" if self.cursor else ""
        thinking_now = not self.text
        plain = self.text + tail
        if self.reasoning.strip():
            plain = f"{thinking_text(self.reasoning)}\n\n{plain}"
        if self.steps:
            plain = f"{tool_steps_text(self.steps)}\n\n{plain}"
        block = tool_steps_html(self.steps) + thinking_block_html(
            self.reasoning, open_=thinking_now, still=thinking_now and self.cursor
        )
        # Plain text, not Markdown: this is redrawn many times a second; the finished Reply renders Markdown once.
        return {
            "text/plain": plain,
            "text/html": f'{TURN_CSS}<div class="hfm-turn hfm-streaming"><div class="hfm-msg hfm-assistant">'
            f'<div class="hfm-role">{html.escape(display_name(self.model))}</div>{block}'
            f"<div class=\"hfm-reply\" style='white-space:pre-wrap'>{html.escape(self.text)}{tail}</div></div></div>",
        }


@dataclass
class Transcript:
    """The conversation so far, as ``%hfchat history`` shows it."""

    turns: Sequence[Turn]
    title: str | None = None

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        plain = "\n\n".join(turn_text(turn) for turn in self.turns) or "(no messages yet)"
        body = "".join(turn_html(turn) for turn in self.turns) or "<em>(no messages yet)</em>"
        heading = f"<h4>{html.escape(self.title)}</h4>" if self.title else ""
        return {
            "text/plain": plain,
            "text/markdown": transcript_markdown(self.turns, title=self.title),
            "text/html": TURN_CSS + heading + body,
        }

    def __repr__(self) -> str:
        return self._repr_mimebundle_()["text/plain"]


@dataclass
class UsageReport:
    """Per-turn and total token usage, as ``%hfchat usage`` shows it."""

    turns: Sequence[Turn]
    context: tuple[int, int | None] | None = None
    rows: list[tuple[str, ...]] = field(init=False)

    def __post_init__(self) -> None:
        self.rows = []
        for index, turn in enumerate(self.turns, 1):
            usage = turn.usage
            speed = turn.tokens_per_second
            self.rows.append(
                (
                    str(index),
                    turn.model,
                    str(usage.input_tokens if usage else "-"),
                    str(usage.output_tokens if usage else "-"),
                    str(usage.total_tokens if usage else "-"),
                    _fmt_seconds(turn.time_to_first_token),
                    "-" if speed is None else f"{speed:.1f}",
                )
            )

    def totals(self) -> tuple[int, int]:
        inputs = sum(t.usage.input_tokens for t in self.turns if t.usage)
        outputs = sum(t.usage.output_tokens for t in self.turns if t.usage)
        return inputs, outputs

    def _summary(self) -> str:
        inputs, outputs = self.totals()
        text = f"{len(self.turns)} turns: in {inputs} · out {outputs} · total {inputs + outputs} tokens"
        if self.context:
            used, limit = self.context
            text += f" | context {used}/{limit} ({used / limit:.0%})" if limit else f" | context {used}"
        return text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        header = ("#", "model", "in", "out", "total", "first token", "tok/s")
        markdown_rows = [header, tuple("---" for _ in header), *self.rows]
        markdown = "\n".join("| " + " | ".join(row) + " |" for row in markdown_rows)
        widths = [max(len(row[i]) for row in (header, *self.rows)) for i in range(len(header))]
        plain = "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in (header, *self.rows)
        )
        summary = self._summary()
        return {
            "text/plain": f"{plain}\n{summary}",
            "text/markdown": f"{markdown}\n\n**{summary}**",
            "text/html": markdown_to_html(markdown) + f"<p><b>{html.escape(summary)}</b></p>",
        }

    def __repr__(self) -> str:
        return self._repr_mimebundle_()["text/plain"]


@dataclass
class ErrorLine:
    """One red line that says what went wrong and what to do (no traceback)."""

    message: str

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {
            "text/plain": f"Error: {self.message}",
            "text/html": f'{TURN_CSS}<div class="hfm-error">⚠ {html.escape(self.message)}</div>',
        }


@dataclass
class InfoTable:
    """A small key/value table (``%hfchat status``, ``%hfchat models``)."""

    title: str
    rows: list[tuple[str, str]]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        width = max((len(key) for key, _ in self.rows), default=0)
        plain = "\n".join([self.title, *(f"  {key.ljust(width)}  {value}" for key, value in self.rows)])
        cells = "".join(
            f"<tr><td style='text-align:left'><b>{html.escape(k)}</b></td><td style='text-align:left'>"
            f"{html.escape(v)}</td></tr>"
            for k, v in self.rows
        )
        return {"text/plain": plain, "text/html": f"<b>{html.escape(self.title)}</b><table>{cells}</table>"}

    def __repr__(self) -> str:
        return self._repr_mimebundle_()["text/plain"]
