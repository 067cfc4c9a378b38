"""A turn drawn as HTML (chat bubbles), Markdown or text: what cell outputs, the panel and exports share.

Model text is rendered as Markdown with raw HTML disabled, so a model cannot inject markup into the notebook.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .model_catalog import display_name

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

    from .turns import ToolCall, ToolStep, Turn


TURN_CSS = """<style>
.hfm-turn { display: flex; flex-direction: column; gap: 6px; margin: 4px 2px; }
.hfm-msg { max-width: 85%; padding: 6px 10px; border-radius: 10px; line-height: 1.45; }
.hfm-msg p { margin: .2em 0; }
.hfm-msg .highlight { border-radius: 6px; overflow: hidden; margin: .3em 0; }
.hfm-msg pre { padding: .4em .6em; margin: 0; overflow-x: auto; }
.hfm-user { align-self: flex-end; background: rgba(33, 150, 243, .18); }
.hfm-assistant { align-self: flex-start; background: var(--jp-layout-color2, #eee); }
.hfm-role { font-size: .72em; font-weight: 600; letter-spacing: .04em; text-transform: uppercase; opacity: .65;
  margin-bottom: 2px; }
.hfm-meta { font-size: .75em; opacity: .6; margin-top: 3px; font-family: var(--jp-code-font-family, monospace); }
.hfm-badge { display: inline-block; font-size: .75em; padding: 0 6px; border-radius: 8px; background: #ffe0b2;
  color: #8a4b00; margin-left: 6px; text-transform: none; letter-spacing: 0; }
.hfm-cursor { animation: hfm-blink 1s steps(2, start) infinite; }
@keyframes hfm-blink { to { visibility: hidden; } }
.hfm-usage { font-size: .8em; opacity: .7; margin-top: .2em; font-family: var(--jp-code-font-family, monospace); }
.hfm-error { color: var(--jp-error-color1, #c62828); font-weight: 600; }
.hfm-thinking { margin: .1em 0 .3em; font-size: .9em; opacity: .8; }
.hfm-thinking summary { cursor: pointer; font-style: italic; }
.hfm-thinking-text { white-space: pre-wrap; border-left: 2px dotted #999; padding-left: .6em; margin-top: .2em; }
.hfm-note { color: #b26a00; font-size: .85em; }
.hfm-tool { margin: .2em 0; font-size: .88em; border-left: 3px solid #90a4ae; padding-left: .5em; }
.hfm-tool summary { cursor: pointer; }
.hfm-tool-ok { border-left-color: #43a047; }
.hfm-tool-error, .hfm-tool-interrupted { border-left-color: #e53935; }
.hfm-tool-declined { border-left-color: #fb8c00; }
.hfm-tool pre { white-space: pre-wrap; max-height: 18em; overflow: auto; margin: .2em 0; padding: .3em .5em;
  background: var(--jp-layout-color1, #fafafa); border-radius: 4px; }
.hfm-tool-label { font-size: .8em; opacity: .65; }
</style>"""
"""The one stylesheet of a drawn turn, its usage line and an error line: cell outputs and the panel share it."""


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


# --------------------------------------------------------------------------------- images
# Inline styles: thumbnails look the same wherever they are drawn, with or without TURN_CSS.
_THUMBNAIL_STYLE = "max-height:96px;max-width:96px;border:1px solid #ccc;border-radius:3px;margin:.2em 0"


def images_html(images: Sequence[dict[str, Any]], size: int = 96) -> str:
    """Thumbnails of image blocks in a row (a link for a remote URL, which is not fetched to draw it)."""
    from ..images import block_reference, thumbnail_data_url

    if not images:
        return ""
    cells = []
    for block in images:
        thumbnail = thumbnail_data_url(block, size)
        label = html.escape(block_reference(block))
        if thumbnail is not None:
            cells.append(f'<img src="{thumbnail}" alt="{label}" title="{label}" style="{_THUMBNAIL_STYLE}">')
        else:
            cells.append(f'<a href="{label}" target="_blank">🖼 {label}</a>')
    return f'<div class="hfm-images" style="display:flex;gap:.4em;flex-wrap:wrap">{"".join(cells)}</div>'


def image_labels(images: Sequence[dict[str, Any]]) -> list[str]:
    """``[image: URL]`` or ``[image: image/png (N bytes)]`` per image: how text and Markdown refer to them."""
    from ..images import block_reference

    return [f"[image: {block_reference(block)}]" for block in images]


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
        f'<details class="hfm-thinking"{" open" if open_ else ""}><summary>{summary}</summary>'
        f'<div class="hfm-thinking-text">{html.escape(reasoning.strip())}</div></details>'
    )


def thinking_text(reasoning: str) -> str:
    """The thinking set apart for a terminal: a header and every line indented."""
    body = "\n".join(f"  {line}" for line in reasoning.strip().splitlines())
    return f"[thinking]\n{body}\n[/thinking]"


# ------------------------------------------------------------------------------ tool calls
TOOL_STATUS = {
    "ok": "✓",
    "error": "✗ error",
    "declined": "declined",
    "interrupted": "■ interrupted",
    "running": "running…",
    "asking": "waiting for your approval…",
    "pending": "not run",
}
MAX_STEPS_NOTE = "The tool loop stopped at its step limit before the model answered: raise --max-steps to let it go on."
CONTEXT_FULL_NOTE = "The tools' results filled the model's context before it answered: ask for less, or start over."
_SHOWN_RESULT_CHARS = 4000
"""Longest result drawn in a call's block (the model may have been sent more)."""


def _arguments_text(call: ToolCall) -> str:
    return json.dumps(call.args, ensure_ascii=False, indent=1) if call.args else "{}"


def _call_summary(call: ToolCall) -> str:
    took = f" · {call.duration:.2f} s" if call.duration is not None else ""
    return f"{call.name} · {TOOL_STATUS.get(call.status, call.status)}{took}"


def tool_call_html(call: ToolCall) -> str:
    """One call as a collapsible block: name, status and time on its summary line; arguments and result inside."""
    label = "error" if call.status in ("error", "interrupted") else "result"
    result = (
        f'<div class="hfm-tool-label">{label}</div><pre>{html.escape(_shown(call.result))}</pre>'
        if call.result is not None
        else ""
    )
    return (
        f'<details class="hfm-tool hfm-tool-{html.escape(call.status)}"><summary>🔧 '
        f"<code>{html.escape(call.name)}</code> {html.escape(_call_summary(call).split(' · ', 1)[1])}</summary>"
        f'<div class="hfm-tool-label">arguments</div><pre>{html.escape(_arguments_text(call))}</pre>{result}</details>'
    )


def tool_steps_html(steps: Sequence[ToolStep]) -> str:
    """The tool steps of a turn, in order: what the model wrote before asking (and its thinking), then its calls."""
    parts = []
    for step in steps:
        parts.append(thinking_block_html(step.reasoning, open_=False))
        if step.text.strip():
            parts.append(markdown_to_html(step.text))
        parts += [tool_call_html(call) for call in step.calls]
    return "".join(parts)


def tool_steps_text(steps: Sequence[ToolStep]) -> str:
    """The tool steps as plain lines: ``[tool] name {args} -> status (time)`` and the result's first lines."""
    lines: list[str] = []
    for step in steps:
        if step.text.strip():
            lines.append(step.text.strip())
        for call in step.calls:
            lines.append(tool_call_text(call))
    return "\n".join(lines)


def tool_call_text(call: ToolCall) -> str:
    args = json.dumps(call.args, ensure_ascii=False)
    took = f" ({call.duration:.2f} s)" if call.duration is not None else ""
    line = f"[tool] {call.name} {args} -> {TOOL_STATUS.get(call.status, call.status)}{took}"
    if call.result:
        result = "\n".join(f"  {row}" for row in _shown(call.result, 400).splitlines()[:8])
        line += f"\n{result}"
    return line


def _tool_steps_markdown(steps: Sequence[ToolStep]) -> list[str]:
    lines: list[str] = []
    for step in steps:
        if step.text.strip():
            lines += [step.text.strip(), ""]
        for call in step.calls:
            lines += [f"**Tool** `{_call_summary(call)}`", "", "```json", _arguments_text(call), "```", ""]
            if call.result is not None:
                lines += ["```", _shown(call.result), "```", ""]
    return lines


def _shown(text: str | None, limit: int = _SHOWN_RESULT_CHARS) -> str:
    from .variables import cut

    return cut(text or "", limit)


def turn_note(turn: Turn) -> str | None:
    """The line a turn ends with when the model did not answer: still thinking, or the tool loop stopped."""
    if turn.still_thinking:
        return STILL_THINKING
    if turn.finish_reason == "max_steps":
        return MAX_STEPS_NOTE
    if turn.finish_reason == "context_full":
        return CONTEXT_FULL_NOTE
    return None


# ---------------------------------------------------------------------------------- turns
def turn_markdown(turn: Turn, *, include_user: bool = True, include_reasoning: bool = False) -> str:
    lines: list[str] = []
    if include_user:
        lines += ["**User**", "", *(f"_{label}_" for label in image_labels(turn.images)), turn.user.strip(), ""]
    lines += [f"**Assistant** ({turn.model})" if turn.model else "**Assistant**", ""]
    lines += _tool_steps_markdown(turn.steps)
    if include_reasoning and turn.reasoning.strip():
        lines += ["\n".join(f"> {line}" for line in ["_Thinking_", "", *turn.reasoning.strip().splitlines()]), ""]
    lines.append(turn.reply.strip() or "_(empty)_")
    note = turn_note(turn)
    if note:
        lines += ["", f"_{note}_"]
    if turn.interrupted:
        lines += ["", "_[interrupted]_"]
    return "\n".join(lines)


def turn_text(turn: Turn, *, include_user: bool = True) -> str:
    lines: list[str] = []
    if include_user:
        lines += [f"User: {label}" for label in image_labels(turn.images)]
        lines.append(f"User: {turn.user.strip()}")
    if turn.steps:
        lines.append(tool_steps_text(turn.steps))
    if turn.reasoning.strip():
        lines.append(thinking_text(turn.reasoning))
    lines.append(f"Assistant: {turn.reply.strip()}")
    note = turn_note(turn)
    if note:
        lines.append(note)
    if turn.interrupted:
        lines.append("[interrupted]")
    return "\n".join(lines)


def turn_html(turn: Turn, *, include_user: bool = True, streaming: bool = False, meta: bool = True) -> str:
    """One turn as chat bubbles: the user's message, then the reply as Markdown, named by its model.

    Args:
        turn: the turn to draw, finished or still streaming.
        include_user: draw the user's message too (a cell's output shows only the reply under the cell).
        streaming: the reply is still coming: a cursor after it and no facts yet.
        meta: a line of facts under a finished reply (tokens, speed, duration); off where a usage line says it.

    The outer ``div`` carries ``hfm-turn`` and its state, ``hfm-streaming``, ``hfm-stopped`` or ``hfm-done``.
    """
    parts = [f'<div class="hfm-turn {_turn_state(turn, streaming)}">']
    if include_user:
        user = html.escape(turn.user.strip()).replace("\n", "<br>")
        images = images_html(turn.images)
        parts.append(f'<div class="hfm-msg hfm-user"><div class="hfm-role">You</div>{images}{user}</div>')
    badge = '<span class="hfm-badge">■ stopped</span>' if turn.interrupted else ""
    if streaming:
        body = (markdown_to_html(turn.reply) if turn.reply else "") + '<span class="hfm-cursor">▍</span>'
    elif turn.reply.strip():
        body = markdown_to_html(turn.reply)
    else:
        body = "" if turn.steps else "<p><em>(empty reply)</em></p>"  # the tool blocks say what happened
    # The thinking stays open while the model thinks and folds once the answer starts.
    thinking_now = streaming and not turn.reply
    thinking = tool_steps_html(turn.steps) + thinking_block_html(turn.reasoning, open_=thinking_now, still=thinking_now)
    note = None if streaming else turn_note(turn)
    if note:
        body += f'<div class="hfm-note">{html.escape(note)}</div>'
    facts = _turn_facts(turn) if meta and not streaming else []
    facts_html = f'<div class="hfm-meta">{" · ".join(facts)}</div>' if facts else ""
    parts.append(
        f'<div class="hfm-msg hfm-assistant"><div class="hfm-role">{html.escape(display_name(turn.model))}{badge}'
        f'</div>{thinking}<div class="hfm-reply">{body}</div>{facts_html}</div></div>'
    )
    return "".join(parts)


def _turn_state(turn: Turn, streaming: bool) -> str:
    if streaming:
        return "hfm-streaming"
    return "hfm-stopped" if turn.interrupted else "hfm-done"


def _turn_facts(turn: Turn) -> list[str]:
    facts: list[str] = []
    if turn.usage:
        facts.append(f"{turn.usage.output_tokens} tokens")
        if turn.tokens_per_second is not None:
            facts.append(f"{turn.tokens_per_second:.1f} tok/s")
    if turn.duration is not None:
        facts.append(f"{'stopped after ' if turn.interrupted else ''}{turn.duration:.1f} s")
    return facts


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
