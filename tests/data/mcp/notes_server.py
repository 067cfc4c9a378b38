"""A small MCP server for the tests and the tools tutorial: a notebook of notes, over stdio or streamable HTTP.

Written with the ``mcp`` SDK's ``MCPServer`` (what ``FastMCP`` is called since mcp 2). Run it as
``python notes_server.py`` (stdio) or ``python notes_server.py --http PORT`` (http://127.0.0.1:PORT/mcp).
``--die-after N`` makes it exit after N tool calls, to see how a client copes with a server that dies.
"""

from __future__ import annotations

import argparse
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("notes")
_notes: dict[str, str] = {}
_calls = 0
_die_after: int | None = None


def _counted() -> None:
    global _calls
    _calls += 1
    if _die_after is not None and _calls > _die_after:
        os._exit(3)  # dies mid-session, as a crashing server would


@server.tool()
def add_note(title: str, text: str) -> str:
    """Store a note under a title (replacing any note of that title)."""
    _counted()
    _notes[title] = text
    return f"Stored note {title!r} ({len(text)} characters)."


@server.tool()
def read_note(title: str) -> str:
    """Read the note stored under a title."""
    _counted()
    if title not in _notes:
        raise ToolError(f"No note titled {title!r}; the notes are: {', '.join(_notes) or 'none'}")
    return _notes[title]


@server.tool()
def count_words(text: str) -> int:
    """Count the words in a text."""
    _counted()
    return len(text.split())


@server.tool()
def server_pid() -> int:
    """The process id of this server (tests check that it stops)."""
    _counted()
    return os.getpid()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None, metavar="PORT")
    parser.add_argument("--die-after", type=int, default=None)
    options = parser.parse_args()
    _die_after = options.die_after
    print(f"notes server starting (pid {os.getpid()})", file=sys.stderr)
    if options.http is not None:
        server.run("streamable-http", host="127.0.0.1", port=options.http)
    else:
        server.run()
