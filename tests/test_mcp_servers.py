"""Real MCP servers (tests/data/mcp/notes_server.py, the ``mcp`` SDK's MCPServer) as a stdio subprocess and over
streamable HTTP on 127.0.0.1: tools listed with their schemas, called from the tool loop's thread, errors and a dying
server as one line, servers stopped when removed and when the extension is unloaded."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from langchain_core.tools import ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool

from hf_magic.chat_models import ChatHuggingFace
from hf_magic.errors import InvalidInputError
from hf_magic.notebook import mcp_servers
from hf_magic.notebook.mcp_servers import McpServer, McpServerError, _server_from_words
from hf_magic.notebook.session import get_session
from tests.support.mcp_server import STDIO_COMMAND
from tests.support.replay_backend import ScriptedBackend
from tests.support.tool_functions import tool_call_reply as call_text

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


@pytest.fixture(scope="module")
def stdio_server() -> Any:
    server = McpServer("notes", command=STDIO_COMMAND)
    server.start()
    yield server
    server.stop()


def tool(server: McpServer, name: str) -> Any:
    return next(t for t in server.tools if t.name == name)


def test_a_stdio_servers_tools_come_with_the_schemas_it_declares(stdio_server: McpServer) -> None:
    assert [t.name for t in stdio_server.tools] == ["add_note", "read_note", "count_words", "server_pid"]
    spec = convert_to_openai_tool(tool(stdio_server, "add_note"))["function"]
    assert spec["description"] == "Store a note under a title (replacing any note of that title)."
    assert spec["parameters"]["required"] == ["title", "text"]


def test_its_tools_run_on_the_server_from_this_thread(stdio_server: McpServer) -> None:
    stored = tool(stdio_server, "add_note").invoke({"title": "t", "text": "hello there"})
    assert stored == "Stored note 't' (11 characters)."
    assert tool(stdio_server, "read_note").invoke({"title": "t"}) == "hello there"
    assert tool(stdio_server, "count_words").invoke({"text": "one two three"}) == "3"
    assert int(tool(stdio_server, "server_pid").invoke({})) != os.getpid()


def test_a_tool_error_is_the_servers_message(stdio_server: McpServer) -> None:
    with pytest.raises(ToolException, match="No note titled 'missing'"):
        tool(stdio_server, "read_note").invoke({"title": "missing"})


def test_a_server_over_streamable_http(mcp_http_url: str) -> None:
    server = McpServer("notes-http", url=mcp_http_url)
    try:
        server.start()
        assert "count_words" in [t.name for t in server.tools]
        assert tool(server, "count_words").invoke({"text": "a b c d"}) == "4"
    finally:
        server.stop()


def test_a_server_that_cannot_start_is_one_line_with_its_reason() -> None:
    server = McpServer("broken", command=[sys.executable, "-c", "import sys; print('bad config', file=sys.stderr)"])
    with pytest.raises(McpServerError) as raised:
        server.start(timeout=60)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("MCP server 'broken' did not start: ")
    assert "bad config" in message and "%hfchat mcp remove broken" in message
    assert not server.running and server.error


def test_a_server_that_dies_fails_its_call_and_starts_again_when_next_needed() -> None:
    server = McpServer("mortal", command=[*STDIO_COMMAND, "--die-after", "1"])
    try:
        server.start()
        first = int(tool(server, "server_pid").invoke({}))
        with pytest.raises(ToolException, match="MCP server 'mortal'"):
            tool(server, "count_words").invoke({"text": "x"})
        assert wait_gone(first)
        server.start()  # what the next cell does: the server is started again
        assert int(tool(server, "server_pid").invoke({})) != first
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["x"], "starts a stdio server"),
        (["x", "ftp://host"], "starts a stdio server"),
        ([], "needs a name"),
    ],
)
def test_mcp_add_refuses_what_is_neither_a_command_nor_a_url(words: list[str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _server_from_words(words)


# ------------------------------------------------------------------------------- in the magic
@pytest.fixture
def ip(hf_shell: InteractiveShell) -> Iterator[InteractiveShell]:
    magics = hf_shell.magics_manager.registry["HfChatMagics"]
    magics.display_mode = "terminal"
    yield hf_shell
    hf_shell.magics_manager.registry["HfChatMagics"].display_mode = "auto"


def test_mcp_add_then_a_cell_uses_its_tools_and_remove_stops_it(ip: InteractiveShell, capsys: Any) -> None:
    session = get_session(f"mcp-{uuid.uuid4().hex[:8]}")
    backend = ScriptedBackend([call_text("server_pid"), "Noted."])
    session.use_model(ChatHuggingFace(llm=backend))
    command = " ".join(STDIO_COMMAND)
    ip.run_line_magic("hfchat", f"mcp add notes --session {session.name} -- {command}")
    ip.run_line_magic("hfchat", f"mcp add broken --session {session.name} -- /no/such/command")
    ip.run_cell_magic("hfchat", f"--session {session.name}", "Which pid?")
    captured = capsys.readouterr()
    broken = [line for line in captured.out.splitlines() if "'broken' did not start" in line]
    assert len(broken) == 1  # one line, and the cell went on with the server that works
    assert [t["function"]["name"] for t in backend.requests[0].tools][-1] == "server_pid"
    pid = int(session.turns[-1].steps[0].calls[0].result or 0)
    assert alive(pid) and session.turns[-1].reply == "Noted."
    ip.run_line_magic("hfchat", f"mcp list --session {session.name}")
    listing = capsys.readouterr().out
    assert "running, 4 tools: add_note, read_note, count_words, server_pid" in listing and "broken" in listing
    ip.run_line_magic("hfchat", f"mcp remove notes --session {session.name}")
    assert wait_gone(pid)


def test_unloading_the_extension_stops_the_servers(ip: InteractiveShell) -> None:
    session = get_session(f"mcp-{uuid.uuid4().hex[:8]}")
    ip.run_line_magic("hfchat", f"mcp add notes --session {session.name} -- {' '.join(STDIO_COMMAND)}")
    [server] = mcp_servers.session_servers(session.name)
    server.start()
    pid = int(tool(server, "server_pid").invoke({}))
    ip.run_line_magic("unload_ext", "hf_magic")
    try:
        assert wait_gone(pid) and not server.running
    finally:
        ip.run_line_magic("load_ext", "hf_magic")
