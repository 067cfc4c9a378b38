"""The panel's "Past conversations" section: the turn log's recent conversations in a picker, and Open, which
rebuilds the panel's session from the one picked (as ``%hfchat log restore`` does)."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..errors import HfMagicError
from .kernel_log import kernel_log
from .panel_view import PanelView
from .session import ChatSession
from .turn_log import ConversationSummary

SHOWN = 30
"""How many recent conversations the picker lists."""


def conversation_label(summary: ConversationSummary) -> str:
    """``2026-12-05 14:02 · default · chat.ipynb · 4 turns · What is a list…``"""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.ended_at))
    first = " ".join(summary.first_message.split())
    first = first if len(first) <= 40 else first[:39] + "…"
    where = [Path(summary.notebook).name] if summary.notebook else []
    return " · ".join([when, summary.session, *where, f"{summary.turns} turns", first])


class PastConversations:
    """The section's widgets (``root``, placed in ``view.past_box``) and what its buttons do to ``session``; the
    list is read when the section is opened, and what went wrong or was opened shows in the panel's lines."""

    def __init__(self, session: ChatSession, view: PanelView) -> None:
        self.session = session
        self._view = view
        self.picker = widgets.Dropdown(options=[], description="Past", layout=widgets.Layout(width="98%"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", layout=widgets.Layout(width="auto"))
        self.open_button = widgets.Button(
            description="Open",
            icon="folder-open",
            tooltip="Continue the picked conversation here (it replaces the one shown)",
            layout=widgets.Layout(width="auto"),
        )
        self.note = widgets.HTML()
        self.root = widgets.VBox([self.picker, widgets.HBox([self.open_button, self.refresh_button]), self.note])
        self.refresh_button.on_click(lambda _: self.refresh())
        self.open_button.on_click(lambda _: self.open())
        view.past_box.children = (self.root,)
        view.settings.observe(self._on_section, names="selected_index")

    def _on_section(self, change: dict[str, Any]) -> None:
        if change["new"] is not None and self._view.settings.children[change["new"]] is self._view.past_box:
            self.refresh()

    def refresh(self) -> None:
        """List the recent conversations (the log may be off or unreadable: then say so, one line)."""
        log = kernel_log()
        try:
            summaries = log.store().conversations(SHOWN)
        except HfMagicError as exc:
            self.picker.options = []
            self.note.value = f'<span class="hfm-note">{html.escape(str(exc))}</span>'
            return
        self.picker.options = [(conversation_label(summary), summary.id) for summary in summaries]
        self.picker.value = summaries[0].id if summaries else None  # the newest, ready to open
        state = "" if log.enabled else " Logging is off in this kernel."
        empty = "Nothing logged yet." if not summaries else ""
        self.note.value = f'<span class="hfm-note">{html.escape((empty + state).strip())}</span>'

    def open(self, conversation: str | None = None) -> None:
        """Put the conversation picked (or ``conversation``) into the session."""
        wanted = conversation or self.picker.value
        if not wanted:
            self._view.show_error("Pick a past conversation first (Refresh lists them).")
            return
        try:
            entries = kernel_log().store().conversation(wanted)
            turns = kernel_log().restore(self.session, entries)
        except HfMagicError as exc:
            self._view.show_error(str(exc))
            return
        self._view.clear_error()
        self._view.show_note(f"Opened a conversation of {len(turns)} turns from the turn log.")
