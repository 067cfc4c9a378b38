"""Turns, transcripts, usage and errors as display bundles (text/plain, text/markdown, text/html)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

    from ..backend import Usage
    from .turns import Turn

MimeBundle = tuple[dict[str, str], dict[str, Any]]

THINKING_CSS = (
    ".hfchat-thinking{margin:.2em 0 .4em;font-size:.9em;opacity:.8}"
    ".hfchat-thinking summary{cursor:pointer;font-style:italic}"
    ".hfchat-thinking-text{white-space:pre-wrap;border-left:2px dotted #999;padding-left:.6em;margin-top:.2em}"
    ".hfchat-note{color:#b26a00;font-size:.85em}"
)
"""Style of the collapsible thinking block, shared by cell outputs and the panel."""

_CSS = (
    "<style>"
    ".hfchat-turn{margin:.3em 0}"
    ".hfchat-role{font-weight:600;font-size:.85em;text-transform:uppercase;letter-spacing:.04em;opacity:.7}"
    ".hfchat-user{border-left:3px solid #4a90d9;padding-left:.6em}"
    ".hfchat-assistant{border-left:3px solid #7cb342;padding-left:.6em}"
    ".hfchat-usage{font-size:.8em;opacity:.65;margin-top:.2em;font-family:monospace}"
    ".hfchat-interrupted{color:#b26a00;font-size:.85em}"
    ".hfchat-error{color:#c62828;font-weight:600}"
    ".hfchat-turn pre{padding:.5em;border-radius:4px;overflow-x:auto}"
    f"{THINKING_CSS}"
    "</style>"
)


# ------------------------------------------------------------------------------- markdown
def _highlight(code: str, language: str, _attrs: Any) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(language or "text")
    except ClassNotFound:
        lexer = get_lexer_by_name("text")
    # noclasses: inline colours survive in saved notebooks and exported HTML with no stylesheet.
    return highlight(code, lexer, HtmlFormatter(noclasses=True, nowrap=False, style="default"))


@lru_cache(maxsize=1)
def _markdown_parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    # "html": False so that a model cannot inject markup or scripts into the notebook.
    return MarkdownIt("commonmark", {"html": False, "highlight": _highlight}).enable("table")


def markdown_to_html(text: str) -> str:
    """Model output (Markdown) as safe HTML, with fenced code blocks highlighted by Pygments."""
    return _markdown_parser().render(text)


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


# ------------------------------------------------------------------------------- thinking
STILL_THINKING = "The model was still thinking when the reply ended: raise --max-new-tokens for an answer."


def thinking_block_html(reasoning: str, *, open_: bool, still: bool = False) -> str:
    """The model's thinking as a collapsible block: open while it thinks, collapsed once the answer starts.

    The thinking is shown as plain text (escaped): it is a draft, often with unbalanced Markdown.
    """
    if not reasoning.strip():
        return ""
    summary = "Thinking…" if still else "Thought"
    return (
        f'<details class="hfchat-thinking"{" open" if open_ else ""}><summary>{summary}</summary>'
        f'<div class="hfchat-thinking-text">{html.escape(reasoning.strip())}</div></details>'
    )


def thinking_text(reasoning: str) -> str:
    """The thinking set apart for a terminal: a header and every line indented."""
    body = "\n".join(f"  {line}" for line in reasoning.strip().splitlines())
    return f"[thinking]\n{body}\n[/thinking]"


# ---------------------------------------------------------------------------------- turns
def turn_markdown(turn: Turn, *, include_user: bool = True, include_reasoning: bool = False) -> str:
    lines: list[str] = []
    if include_user:
        lines += ["**User**", "", turn.user.strip(), ""]
    lines += [f"**Assistant** ({turn.model})" if turn.model else "**Assistant**", ""]
    if include_reasoning and turn.reasoning.strip():
        lines += ["\n".join(f"> {line}" for line in ["_Thinking_", "", *turn.reasoning.strip().splitlines()]), ""]
    lines.append(turn.reply.strip() or "_(empty)_")
    if turn.still_thinking:
        lines += ["", f"_{STILL_THINKING}_"]
    if turn.interrupted:
        lines += ["", "_[interrupted]_"]
    return "\n".join(lines)


def turn_text(turn: Turn, *, include_user: bool = True) -> str:
    lines: list[str] = []
    if include_user:
        lines.append(f"User: {turn.user.strip()}")
    if turn.reasoning.strip():
        lines.append(thinking_text(turn.reasoning))
    lines.append(f"Assistant: {turn.reply.strip()}")
    if turn.still_thinking:
        lines.append(STILL_THINKING)
    if turn.interrupted:
        lines.append("[interrupted]")
    return "\n".join(lines)


def _turn_html(turn: Turn, *, include_user: bool) -> str:
    parts = ['<div class="hfchat-turn">']
    if include_user:
        parts.append(
            '<div class="hfchat-user"><div class="hfchat-role">User</div>'
            f"<div>{html.escape(turn.user.strip()).replace(chr(10), '<br>')}</div></div>"
        )
    role = f"Assistant · {html.escape(turn.model)}" if turn.model else "Assistant"
    thinking = thinking_block_html(turn.reasoning, open_=False)
    parts.append(
        f'<div class="hfchat-assistant"><div class="hfchat-role">{role}</div>{thinking}{markdown_to_html(turn.reply)}'
    )
    if turn.still_thinking:
        parts.append(f'<div class="hfchat-note">{html.escape(STILL_THINKING)}</div>')
    if turn.interrupted:
        parts.append('<div class="hfchat-interrupted">⏹ interrupted</div>')
    parts.append("</div></div>")
    return "".join(parts)


@dataclass
class Reply:
    """A finished (or interrupted) reply as shown under a ``%%hfchat`` cell, with its usage line."""

    turn: Turn
    usage: str = ""
    format: str = "markdown"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> MimeBundle:
        text = self.turn.reply.strip() + (f"\n{STILL_THINKING}" if self.turn.still_thinking else "")
        if self.turn.reasoning.strip():
            text = f"{thinking_text(self.turn.reasoning)}\n\n{text}"
        text += "\n[interrupted]" if self.turn.interrupted else ""
        if self.usage:
            text += f"\n\n{self.usage}"
        data = {"text/plain": text}
        if self.format == "markdown":
            markdown = turn_markdown(self.turn, include_user=False).split("\n\n", 1)[1]
            data["text/markdown"] = markdown + (f"\n\n`{self.usage}`" if self.usage else "")
            body = _turn_html(self.turn, include_user=False)
            usage = f'<div class="hfchat-usage">{html.escape(self.usage)}</div>' if self.usage else ""
            data["text/html"] = _CSS + body + usage
        return data, {"hf_magic": _usage_metadata(self.turn)}

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
    """The thinking so far: shown open above the answer until the answer starts, then collapsed."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        tail = " ▌" if self.cursor else ""
        thinking_now = not self.text
        plain = self.text + tail
        if self.reasoning.strip():
            plain = f"{thinking_text(self.reasoning)}\n\n{plain}"
        block = thinking_block_html(self.reasoning, open_=thinking_now, still=thinking_now and self.cursor)
        return {
            "text/plain": plain,
            "text/html": f'{_CSS}<div class="hfchat-assistant"><div class="hfchat-role">Assistant · '
            f"{html.escape(self.model)}</div>{block}"
            f"<div style='white-space:pre-wrap'>{html.escape(self.text)}{tail}</div></div>",
        }


# ----------------------------------------------------------------------------- transcript
def transcript_markdown(turns: Sequence[Turn], title: str | None = None, include_reasoning: bool = False) -> str:
    """The whole conversation as a Markdown document (what ``%hfchat export x.md`` writes); the models'
    thinking only with ``include_reasoning`` (``%hfchat export x.md --thinking``)."""
    blocks: list[str] = [f"# {title}"] if title else []
    system = next((t.system_prompt for t in turns if t.system_prompt), None)
    if system:
        blocks.append(f"**System**\n\n{system.strip()}")
    for turn in turns:
        blocks.append(turn_markdown(turn, include_reasoning=include_reasoning))
    if not turns:
        blocks.append("_(no messages yet)_")
    return "\n\n---\n\n".join(blocks) + "\n"


@dataclass
class Transcript:
    """The conversation so far, as ``%hfchat history`` shows it."""

    turns: Sequence[Turn]
    title: str | None = None

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        plain = "\n\n".join(turn_text(turn) for turn in self.turns) or "(no messages yet)"
        body = "<hr>".join(_turn_html(turn, include_user=True) for turn in self.turns) or "<em>(no messages yet)</em>"
        heading = f"<h4>{html.escape(self.title)}</h4>" if self.title else ""
        return {
            "text/plain": plain,
            "text/markdown": transcript_markdown(self.turns, title=self.title),
            "text/html": _CSS + heading + body,
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
            "text/html": f'{_CSS}<div class="hfchat-error">⚠ {html.escape(self.message)}</div>',
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
