"""gpt-oss replies (the "harmony" format): thinking in the ``analysis`` channel, the answer in ``final``,
tool calls as messages addressed ``to=functions.NAME``.

A reply is a run of messages ``<|channel|>CHANNEL[ to=RECIPIENT]<|message|>BODY<|end|>``, each but the
first after ``<|start|>assistant``; it ends with ``<|return|>`` or, for a tool call, ``<|call|>``.
The markers are special tokens, so the pipeline decodes them (``keeps_special_tokens``).
"""

from __future__ import annotations

import re

from ..reasoning import ReplyEnd, ReplyParts, partial_suffix
from .tool_calls import call_from_text

MESSAGE = "<|message|>"
_ENDS = ("<|end|>", "<|call|>", "<|return|>", "<|start|>")
_MARKERS = (MESSAGE, "<|channel|>", "<|constrain|>", *_ENDS)
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
# A header this long with no <|message|> is not harmony: the model is writing plain text.
_LONGEST_HEADER = 160


def uses_harmony(chat_template: str | None) -> bool:
    """True for a chat template that writes gpt-oss channels."""
    return bool(chat_template) and "<|channel|>" in str(chat_template)


class HarmonyParser:
    """Splits a gpt-oss reply as it streams: ``analysis`` is thinking, ``final`` (or ``commentary``
    without a recipient, which gpt-oss shows the user) is answer, ``to=functions.NAME`` a tool call."""

    keeps_special_tokens = True
    reads_tool_calls = True

    def __init__(self) -> None:
        self._held = ""
        self._in_header = True
        self._channel = ""
        self._recipient = ""
        self._call_body = ""
        self._end = ReplyEnd()
        self._answered = False
        self._thought = False

    def push(self, text: str) -> ReplyParts:
        parts = ReplyParts()
        held = self._held + text
        while held:
            if self._in_header:
                at = held.find(MESSAGE)
                if at < 0:
                    if len(held) <= _LONGEST_HEADER:
                        break
                    self._channel, self._recipient, self._in_header = "final", "", False
                    continue
                self._open_message(held[:at])
                held = held[at + len(MESSAGE) :]
                continue
            ends = [(at, marker) for marker in _ENDS if (at := held.find(marker)) >= 0]
            if ends:
                at, marker = min(ends)
                self._route(parts, held[:at])
                self._close_message()
                held = held[at + len(marker) :] if marker != "<|start|>" else held[at:]
                self._in_header = True
                continue
            keep = partial_suffix(held, _MARKERS)
            self._route(parts, held[: len(held) - keep])
            held = held[len(held) - keep :]
            break
        self._held = held
        return parts

    def finish(self) -> ReplyEnd:
        end = self._end
        held, self._held = self._held, ""
        if not self._in_header:
            self._route(end, held)
            if self._recipient and not self._call_body.strip():
                self._call_body = "<cut before its arguments>"  # not a call with no arguments: an invalid one
            self._close_message()
        elif held and "<|" not in held:
            end.text += held  # plain text that never became a message
        end.still_thinking = self._thought and not self._answered and not (end.tool_calls or end.invalid_tool_calls)
        return end

    def _open_message(self, header: str) -> None:
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        self._channel = channel.group(1) if channel else "final"
        self._recipient = recipient.group(1) if recipient else ""
        self._call_body = ""
        self._in_header = False

    def _route(self, parts: ReplyParts, piece: str) -> None:
        if not piece:
            return
        if self._recipient:
            self._call_body += piece  # arguments are shown once whole, as a tool call
        elif self._channel == "analysis":
            self._thought = True
            parts.reasoning += piece
        else:
            self._answered = True
            parts.text += piece

    def _close_message(self) -> None:
        if self._recipient.startswith("functions."):
            call, invalid = call_from_text(self._recipient.removeprefix("functions."), self._call_body.strip())
            if call is not None:
                self._end.tool_calls.append(call)
            elif invalid is not None:
                self._end.invalid_tool_calls.append(invalid)
        self._recipient, self._call_body = "", ""
