"""The test MCP server (tests/data/mcp/notes_server.py): its command line for stdio, and the session-scoped
``mcp_http_url`` fixture serving it over streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.olah import free_port
from tests.support.processes import stop_process

NOTES_SERVER = Path(__file__).resolve().parents[1] / "data" / "mcp" / "notes_server.py"
STDIO_COMMAND = [sys.executable, str(NOTES_SERVER)]
"""The stdio server as ``%hfchat mcp add NAME -- COMMAND`` starts it."""


@pytest.fixture(scope="session")
def mcp_http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT/mcp``: the notes server over streamable HTTP, stopped after the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("mcp-http") / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen([*STDIO_COMMAND, "--http", str(port)], stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:  # the MCP route answers only MCP requests: a listening socket is the sign it is up
                if process.poll() is not None:
                    raise RuntimeError(f"the MCP HTTP server exited: {log.read_text()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the MCP HTTP server did not listen: {log.read_text()[-2000:]}") from None
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            stop_process(process, timeout=10)
