"""What the tool tests offer models: a function (as Python, and as the source a notebook cell defines it with) and the
text a model writes to call a tool, as the scripted backend replays it."""

from __future__ import annotations

import inspect
import json
from typing import Any


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


ADD_SOURCE = inspect.getsource(add)
"""``add`` as a notebook cell defines it."""


TOUCH_SOURCE = '''
touched = []

def touch(note: str) -> str:
    """Record a note.

    Args:
        note: what to record.
    """
    touched.append(note)
    return "recorded " + note
'''
"""A tool with a side effect to check (what ran, in which order), as a notebook cell defines it."""


def tool_call_reply(name: str, **args: Any) -> str:
    """A reply that calls tool ``name`` with ``args``, written as the tools prompt asks (Hermes style)."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"
