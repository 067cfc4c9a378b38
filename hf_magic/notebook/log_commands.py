"""``%hfchat log ...``: the turn log read back (a table, search, one turn), a logged conversation restored or
exported, turns forgotten, and logging switched off or on for this kernel."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import InvalidInputError
from . import transcript
from .kernel_log import kernel_log
from .line_commands import line_command
from .render import InfoTable, Transcript
from .turn_drawing import markdown_to_html
from .turn_log import LoggedEvent
from .turn_records import LoggedTurn, transcript_of

if TYPE_CHECKING:
    from .magics import HfChatMagics
    from .session import ChatSession

USAGE = (
    "log [N] | log search TEXT | log show ID | log events [N] | log restore [ID | --last] | "
    "log export PATH [ID | --last] | log forget ID | --all (or the line's --session NAME) | log off | log on"
)
DEFAULT_ROWS = 20


@line_command("log", USAGE)
def log(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    action, rest = (words[0], list(words[1:])) if words else ("", [])
    if action in ("", *_digits(action)):
        _table(magics, int(action or DEFAULT_ROWS))
    elif action in _ACTIONS:
        _ACTIONS[action](magics, session, rest)
    else:
        raise InvalidInputError(f"Unknown %hfchat log action {action!r}: use {USAGE}.")


def _digits(word: str) -> list[str]:
    return [word] if word.isdigit() and int(word) > 0 else []


def _table(magics: HfChatMagics, rows: int) -> None:
    log = kernel_log()
    entries = log.store().recent(rows)
    state = "on" if log.enabled else ("off (HF_MAGIC_NO_LOG is set)" if config.log_disabled() else "off")
    title = f"Turn log {log.store().path} · logging {state} · last {len(entries)} turns"
    magics.show(LogTable(title, TURN_HEADER, turn_rows(entries)))


def _search(magics: HfChatMagics, session: ChatSession, words: list[str]) -> None:
    text = " ".join(words)
    if not text.strip():
        raise InvalidInputError("%hfchat log search needs words to look for, e.g. %hfchat log search Paris.")
    found = kernel_log().store().search(text)
    magics.show(LogTable(f"{len(found)} logged turns with {text!r}, newest first", TURN_HEADER, turn_rows(found)))


def _events(magics: HfChatMagics, session: ChatSession, words: list[str]) -> None:
    count = int(words[0]) if words and _digits(words[0]) else DEFAULT_ROWS
    events = kernel_log().store().recent_events(count)
    magics.show(
        LogTable(f"Last {len(events)} logged runs (a prompt over a table...)", EVENT_HEADER, event_rows(events))
    )


def _show(magics: HfChatMagics, session: ChatSession, words: list[str]) -> None:
    entry = _entry(words, "show")
    magics.show(InfoTable(f"Logged turn {entry.id}", _facts(entry)))
    magics.show(Transcript([entry.turn]))


def _restore(magics: HfChatMagics, session: ChatSession, words: list[str]) -> None:
    entries = _conversation(session, words, "restore")
    turns = kernel_log().restore(session, entries)
    first = entries[0]
    where = f" of {Path(first.notebook).name}" if first.notebook else ""
    print(
        f"Session {session.name!r}: restored {len(turns)} turns from the turn log (conversation {first.conversation}"
        f"{where}, {_when(first.logged_at)})."
    )
    left_out = sum(entry.images_left_out for entry in entries)
    if left_out:
        print(
            f"{left_out} image(s) were left out: the log keeps where an image came from, not its pixels, and these "
            "were not files or URLs, or the file changed since; send them again with --image."
        )
    if not session.loaded:
        print(f"The next message loads {session.spec.describe()}.")


def _export(magics: HfChatMagics, session: ChatSession, words: list[str]) -> None:
    if not words or words[0].isdigit() or words[0] == "--last":
        raise InvalidInputError("%hfchat log export needs a file path first, e.g. %hfchat log export chat.json 12.")
    entries = _conversation(session, words[1:], "export")
    turns = transcript_of(entries)
    last = entries[-1]
    target = transcript.export(words[0], turns, name=last.session, spec=last.spec, settings=last.settings)
    print(f"Exported {len(turns)} logged turns (conversation {last.conversation}) to {target}")


def _forget(magics: HfChatMagics, session: ChatSession, words: list[str]) -> None:
    store = kernel_log().store()
    if words == ["--all"]:
        count = store.forget(everything=True)
        print(f"Forgot every logged turn ({count}) in {store.path}.")
    elif words and all(word.isdigit() for word in words):
        count = store.forget(ids=[int(word) for word in words])
        print(f"Forgot {count} logged turn(s) (with any copies restores made of them).")
    elif not words:
        count = store.forget(session=session.name)
        print(f"Forgot {count} logged turn(s) of session {session.name!r}.")
    else:
        raise InvalidInputError(
            "%hfchat log forget takes turn ids (%hfchat log forget 12 13), --all, or --session NAME."
        )


def _switch(on: bool) -> Any:
    def switch(magics: HfChatMagics, session: ChatSession, words: list[str]) -> None:
        magics.log = on  # the trait tells the kernel's log (``%config HfChatMagics.log`` does the same)
        path = kernel_log().store().path
        if on and config.log_disabled():
            print("HF_MAGIC_NO_LOG is set in this kernel's environment: nothing is logged until it is unset.")
        elif on:
            print(f"Turn log on: each turn is written to {path}.")
        else:
            print(f"Turn log off for this kernel. What {path} holds stays: %hfchat log forget deletes it.")

    return switch


_ACTIONS = {
    "search": _search,
    "events": _events,
    "show": _show,
    "restore": _restore,
    "export": _export,
    "forget": _forget,
    "off": _switch(False),
    "on": _switch(True),
}


# ------------------------------------------------------------------------------- lookups
def _entry(words: list[str], action: str) -> LoggedTurn:
    if len(words) != 1 or not words[0].isdigit():
        raise InvalidInputError(f"%hfchat log {action} needs a turn id from %hfchat log, e.g. %hfchat log {action} 12.")
    entry = kernel_log().store().entry(int(words[0]))
    if entry is None:
        raise InvalidInputError(f"No logged turn {words[0]}: %hfchat log lists them (it may have been forgotten).")
    return entry


def _conversation(session: ChatSession, words: list[str], action: str) -> list[LoggedTurn]:
    """The conversation a turn id names (up to that turn), or by default (``--last``) the one the line's session
    logged last, in any kernel."""
    store = kernel_log().store()
    if words and words != ["--last"]:
        entry = _entry(words, action)
        return store.conversation(entry.conversation, through=entry.id)
    conversation = store.last_conversation(session.name)
    if conversation is None:
        raise InvalidInputError(
            f"The turn log holds no conversation of session {session.name!r}: name another with --session NAME, "
            "or pick a turn id from %hfchat log."
        )
    return store.conversation(conversation)


def _facts(entry: LoggedTurn) -> list[tuple[str, str]]:
    turn, usage = entry.turn, entry.turn.usage
    facts = [
        ("logged", _when(entry.logged_at)),
        ("session", entry.session),
        ("conversation", entry.conversation + (" (carried in by a restore or load)" if entry.carried else "")),
        ("notebook", entry.notebook or "-"),
        ("cell", turn.key or "-"),
        ("model", f"{turn.model or entry.spec.get('model', '')} ({entry.backend})"),
        ("ended", entry.ended + (f": {entry.error}" if entry.error else "")),
        ("usage", f"in {usage.input_tokens} · out {usage.output_tokens}" if usage else "-"),
        ("time", f"{turn.duration:.2f} s" if turn.duration is not None else "-"),
        ("tool calls", str(sum(len(step.calls) for step in turn.steps))),
        (
            "images",
            f"{len(turn.images)} back" + (f", {entry.images_left_out} left out" if entry.images_left_out else ""),
        ),
    ]
    return facts


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _cut(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


TURN_HEADER = ("id", "logged", "session", "model", "ended", "message", "reply")
EVENT_HEADER = ("id", "logged", "session", "kind", "text", "detail")


def turn_rows(entries: Sequence[LoggedTurn]) -> list[tuple[str, ...]]:
    """Logged turns as table rows: id, when, session, model, how it ended, message and reply (cut)."""
    return [
        (
            str(entry.id),
            _when(entry.logged_at),
            entry.session,
            entry.turn.model or str(entry.spec.get("model", "")),
            entry.ended,
            _cut(entry.turn.user, 48),
            _cut(entry.error or entry.turn.reply, 48),
        )
        for entry in entries
    ]


def event_rows(events: Sequence[LoggedEvent]) -> list[tuple[str, ...]]:
    return [
        (str(e.id), _when(e.logged_at), e.session, e.kind, _cut(e.text, 40), _cut(json.dumps(e.detail), 60))
        for e in events
    ]


@dataclass
class LogTable:
    """Rows of the log as a table (plain text, Markdown and HTML)."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        header, rows = self.header, self.rows
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        plain = "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in (header, *rows)
        )
        escaped = [tuple(cell.replace("|", "\\|") for cell in row) for row in (header, *rows)]
        markdown = "\n".join(
            "| " + " | ".join(row) + " |" for row in [escaped[0], tuple("---" for _ in header), *escaped[1:]]
        )
        return {
            "text/plain": f"{self.title}\n{plain}",
            "text/markdown": f"**{self.title}**\n\n{markdown}",
            "text/html": f"<b>{html.escape(self.title)}</b>" + markdown_to_html(markdown),
        }

    def __repr__(self) -> str:
        return self._repr_mimebundle_()["text/plain"]
