"""The ``%hfchat NAME ...`` subcommands that capabilities bring along (tools, engines, the turn log...).

A capability's module registers its subcommand with ``@line_command``; the magic looks it up here, so a new
subcommand needs no more than one import line in magics.py. The handler gets the magics instance (to show output
and reach the user's namespace), the session the line names (``--session NAME``) and the words after its name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .magics import HfChatMagics
    from .session import ChatSession

LineHandler = Callable[["HfChatMagics", "ChatSession", Sequence[str]], None]


@dataclass(frozen=True)
class LineCommand:
    name: str
    usage: str
    """How it is called, for help and errors: e.g. ``log [N] | log search TEXT``."""
    handler: LineHandler


_COMMANDS: dict[str, LineCommand] = {}


def line_command(name: str, usage: str) -> Callable[[LineHandler], LineHandler]:
    """Register the decorated function as ``%hfchat NAME ...``."""

    def register(handler: LineHandler) -> LineHandler:
        _COMMANDS[name] = LineCommand(name, usage, handler)
        return handler

    return register


def registered() -> dict[str, LineCommand]:
    """The registered subcommands by name."""
    return dict(_COMMANDS)
