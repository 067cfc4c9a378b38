"""Approval before a tool runs: the cell asks with buttons (Run, Skip, Always this session), a terminal with input().

Code-running tools and the tools the user marked ask before every call, unless the user chose "Always this session"
for that tool. A skipped call goes back to the model as declined (tool_loop.py); where nobody can be asked, nothing
that needs approval runs. While the buttons wait, the widget messages of the blocked cell are handled
(widget_events.py), and an interrupt or ``session.stop()`` ends the wait.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .tool_loop import Approver, Decision
from .turn_drawing import TURN_CSS, markdown_to_html
from .turns import ToolCall
from .widget_events import widget_events

Answer = Literal["run", "skip", "always"]
_ANSWERS: dict[str, Answer] = {
    "r": "run", "run": "run", "y": "run", "yes": "run",
    "s": "skip", "skip": "skip", "n": "skip", "no": "skip", "": "skip",
    "a": "always", "always": "always",
}  # fmt: skip
_POLL_SECONDS = 0.05


def approver(notebook: bool, always: set[str], shell: Any = None) -> Approver:
    """What the tool loop asks before a call that needs approval: buttons in a notebook, ``input()`` in a terminal.
    "Always this session" adds the tool's name to ``always`` (the session's), which runs it without asking again."""

    def approve(call: ToolCall, cancel: threading.Event) -> Decision:
        if call.name in always:
            return "run"
        answer = ask_with_buttons(call, cancel, shell) if notebook else ask_with_input(call)
        if answer == "always":
            always.add(call.name)
        return "skip" if answer == "skip" else "run"

    return approve


def call_preview(call: ToolCall) -> str:
    """The call as the user reads it before approving: code as code, other arguments as JSON."""
    code = call.args.get("code") if len(call.args) == 1 else None
    if isinstance(code, str):
        return code
    return json.dumps(call.args, ensure_ascii=False, indent=1)


def ask_with_input(call: ToolCall, read: Callable[[str], str] | None = None) -> Answer:
    """Ask on the terminal (or Jupyter's input box) with ``read`` (default: ``input``, looked up now, as IPython
    replaces it); where input cannot be read, the call is skipped."""
    print(f"The model wants to run {call.name}:\n{call_preview(call)}")
    while True:
        try:
            reply = (read or input)("Run it? [r]un / [s]kip / [a]lways this session: ")
        except Exception as exc:  # EOFError, or StdinNotImplementedError where the frontend takes no input
            print(f"Cannot ask ({type(exc).__name__}): {call.name} was skipped.")
            return "skip"
        answer = _ANSWERS.get(reply.strip().lower())
        if answer is not None:
            return answer


def ask_with_buttons(call: ToolCall, cancel: threading.Event, shell: Any) -> Answer:
    """Ask in the cell's output with Run / Skip / Always this session, and wait for a click.

    The buttons are replaced by one line that records the answer. Where the kernel's widget messages cannot be
    handled during a cell (not ipykernel 7), the question is asked with ``input()`` instead.

    Raises:
        KeyboardInterrupt: the kernel was interrupted, or ``cancel`` was set, while waiting.
    """
    from IPython.display import display
    from ipywidgets import HTML, Button, HBox, Layout, VBox

    with widget_events(shell) as events:
        if events is None:
            return ask_with_input(call)
        chosen: list[Answer] = []
        buttons = [
            Button(description="Run", button_style="success", icon="play", tooltip=f"Run {call.name} once"),
            Button(description="Skip", icon="ban", tooltip="Tell the model the user declined"),
            Button(description="Always this session", icon="check-double", layout=Layout(width="auto")),
        ]
        for button, answer in zip(buttons, ("run", "skip", "always"), strict=True):
            button.on_click(lambda _button, answer=answer: chosen.append(answer))
        box = VBox([HTML(TURN_CSS + _question_html(call)), HBox(buttons)])
        box.add_class("hfm-approval")
        handle = display(box, display_id=True)
        record = ApprovalRecord(call, "interrupted")
        try:
            while not chosen:
                if cancel.is_set():
                    raise KeyboardInterrupt
                if not events.poll():
                    time.sleep(_POLL_SECONDS)
            record = ApprovalRecord(call, chosen[0])
            return chosen[0]
        finally:
            if handle is not None:
                handle.update(record)
            box.close()


def _question_html(call: ToolCall) -> str:
    preview = call_preview(call)
    language = "python" if "code" in call.args and len(call.args) == 1 else "json"
    return (
        f'<div class="hfm-note">⚠ The model wants to run <code>{html.escape(call.name)}</code>:</div>'
        + markdown_to_html(f"```{language}\n{preview}\n```")
    )


@dataclass
class ApprovalRecord:
    """What the user answered, in place of the buttons once they clicked."""

    call: ToolCall
    answer: str

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        said = {
            "run": "approved once",
            "always": "approved for this session",
            "skip": "skipped",
            "interrupted": "not answered (interrupted)",
        }[self.answer]
        text = f"{self.call.name}: {said}"
        return {"text/plain": text, "text/html": f'<div class="hfm-usage">🔒 {html.escape(text)}</div>'}
