"""MCP servers as tools of a session: ``%hfchat mcp add NAME -- COMMAND [ARGS]`` (stdio) or ``mcp add NAME URL``
(streamable HTTP), ``mcp list``, ``mcp remove NAME``.

The ``mcp`` SDK (2.x) is the client: its ``ClientSession`` over its stdio or streamable HTTP transport. It is async,
so every server's client session lives on one event loop of our own, on a background thread (never the kernel's
loop, which a running cell blocks), and the tool loop calls them synchronously through that loop. A server's tools
become langchain tools whose schema is the one the server declares. (``langchain-mcp-adapters`` would do that
conversion, but it requires ``mcp<2``.) A server
starts when a cell first needs its tools and stops when removed, when the extension is unloaded and at exit; a
server that cannot start, or dies, is one line, and the session goes on without it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from ..errors import HfMagicError, InvalidInputError
from .line_commands import line_command
from .tool_loop import LoopTool

if TYPE_CHECKING:
    from .magics import HfChatMagics
    from .session import ChatSession

START_TIMEOUT_S = 60.0
"""How long a server has to answer ``initialize`` and list its tools (a stdio server may import a lot first)."""
STOP_TIMEOUT_S = 10.0


class McpServerError(HfMagicError):
    """An MCP server could not start, or stopped: the message names it and says what to do."""


# ------------------------------------------------------------------------ the background loop
class _BackgroundLoop:
    """An asyncio loop on a daemon thread, started at first use: where every MCP client session runs."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="hf_magic-mcp", daemon=True).start()
                self._loop = loop
            return self._loop

    def submit(self, coroutine: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)


_BACKGROUND = _BackgroundLoop()


def wait_for(future: concurrent.futures.Future[Any], timeout: float | None = None) -> Any:
    """The future's result, waited for in short slices so that an interrupt (KeyboardInterrupt) reaches this thread;
    the interrupt cancels the work on the background loop.

    Raises:
        TimeoutError: ``timeout`` seconds passed first (the work is cancelled).
    """
    waited = 0.0
    try:
        while True:
            try:
                return future.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                waited += 0.1
                if timeout is not None and waited >= timeout:
                    future.cancel()
                    raise TimeoutError from None
    except KeyboardInterrupt:
        future.cancel()
        raise


# ----------------------------------------------------------------------------- one server
class McpServer:
    """One MCP server of a session: how it is reached, and once started, its client session and tools."""

    def __init__(self, name: str, *, command: Sequence[str] = (), url: str | None = None, approve: bool = False):
        if bool(command) == bool(url):
            raise InvalidInputError("An MCP server is a command (mcp add NAME -- COMMAND ARGS) or a URL, not both.")
        self.name, self.command, self.url, self.needs_approval = name, list(command), url, approve
        self.tools: list[BaseTool] = []
        self.error: str | None = None
        """Why it is not running: it failed to start, or died."""
        self._session: Any = None
        self._stop: asyncio.Event | None = None
        self._task: concurrent.futures.Future[Any] | None = None
        self._log = Path(tempfile.gettempdir()) / f"hf_magic-mcp-{id(self):x}-{name}.log"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self.error is None

    def describe(self) -> str:
        where = self.url or " ".join(self.command)
        if self.running:
            state = f"running, {len(self.tools)} tools: {', '.join(tool.name for tool in self.tools)}"
        elif self.error:
            state = f"stopped: {self.error}"
        else:
            state = "starts when a cell first needs it"
        return f"{where} · {state}" + (" · asks first" if self.needs_approval else "")

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server (unless running) and read its tools.

        Raises:
            McpServerError: it did not start, or did not answer within ``timeout`` seconds; the message says why.
        """
        if self.running:
            return
        try:
            import mcp  # noqa: F401
        except ImportError as exc:
            raise McpServerError(
                f"MCP server {self.name!r} needs the mcp package: pip install 'mcp>=2' (or hf-magic[lab])."
            ) from exc
        self.stop()
        self.error = None
        ready: concurrent.futures.Future[list[BaseTool]] = concurrent.futures.Future()
        self._task = _BACKGROUND.submit(self._serve(ready))
        try:
            self.tools = wait_for(ready, timeout)
        except TimeoutError:
            self._fail(f"it did not answer within {timeout:.0f} s")
        except Exception as exc:  # the SDK's transports fail in many ways: all become one line
            self._fail(_reason(exc))

    def _fail(self, reason: str) -> None:
        self.stop()
        self.error = reason
        tail = self._log_tail()
        raise McpServerError(
            f"MCP server {self.name!r} did not start: {reason}{f' (its last words: {tail})' if tail else ''}; "
            f"check it with %hfchat mcp list, or remove it with %hfchat mcp remove {self.name}."
        )

    async def _serve(self, ready: concurrent.futures.Future[list[BaseTool]]) -> None:
        """Hold the client session open until ``stop``; the transport's contexts are entered and left in this one
        task, as anyio requires."""
        from mcp import ClientSession

        self._stop = asyncio.Event()
        try:
            with self._log.open("w") as log:
                async with self._transport(log) as streams, ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    listed, cursor = [], None
                    while True:  # the tool list may come in pages
                        page = await session.list_tools(params=_page(cursor))
                        listed += page.tools
                        cursor = page.next_cursor
                        if not cursor:
                            break
                    self._session = session
                    ready.set_result([self._tool(spec) for spec in listed])
                    await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            elif not self._stop.is_set():
                self.error = f"it died ({_reason(exc)})"
            if not isinstance(exc, (Exception, asyncio.CancelledError)):
                raise

    def _transport(self, log: Any) -> AbstractAsyncContextManager[Any]:
        if self.url:
            from mcp.client.streamable_http import streamable_http_client

            return streamable_http_client(self.url)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        # The SDK's default environment for the child (PATH, HOME...): not the kernel's, which may hold tokens.
        return stdio_client(StdioServerParameters(command=self.command[0], args=self.command[1:]), errlog=log)

    def _tool(self, spec: Any) -> BaseTool:
        """One of the server's tools (an ``mcp`` ``Tool``) as a langchain tool: the model sees the schema the server
        declares, and a call runs on the server through the background loop."""

        def call(**arguments: Any) -> str:
            return self.call(spec.name, arguments)

        return StructuredTool.from_function(
            call,
            name=spec.name,
            description=spec.description or spec.title or spec.name,
            args_schema=spec.input_schema,
        )

    def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """Call ``tool`` on the server and wait for its result as text (an interrupt cancels the call).

        Raises:
            ToolException: the tool reported an error, or the server is not running.
        """
        if not self.running or self._session is None:
            raise ToolException(f"MCP server {self.name!r} is not running ({self.error or 'stopped'}).")
        try:
            result = wait_for(_BACKGROUND.submit(self._session.call_tool(tool, arguments)))
        except Exception as exc:
            if _connection_lost(exc) or (self._task is not None and self._task.done()):
                self.error = f"it died ({_reason(exc)})"  # the next cell that needs it starts it again
                raise ToolException(
                    f"MCP server {self.name!r} stopped ({_reason(exc)}); the next cell starts it again."
                ) from exc
            raise ToolException(f"MCP server {self.name!r}: {_reason(exc)}") from exc
        text = call_result_text(result)
        if result.is_error:
            raise ToolException(text or "the server reported an error")
        return text

    def stop(self) -> None:
        """Close the client session (a stdio server's process ends with it); does nothing when not running."""
        task, stop = self._task, self._stop
        self._task, self._session = None, None
        if task is None or task.done():
            return
        if stop is not None:
            _BACKGROUND.loop.call_soon_threadsafe(stop.set)
        try:
            task.result(timeout=STOP_TIMEOUT_S)
        except Exception:  # a server that will not close: cancel its task, which kills a stdio child
            task.cancel()

    def _log_tail(self) -> str:
        try:
            lines = [line for line in self._log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1][-200:] if lines else ""


def call_result_text(result: Any) -> str:
    """An ``mcp`` ``CallToolResult`` as the text a model reads: its text blocks, a note for each other block, or its
    structured content when it has no blocks."""
    parts: list[str] = []
    for block in result.content:
        if block.type == "text":
            parts.append(block.text)
        elif block.type == "resource":
            parts.append(getattr(block.resource, "text", None) or f"[resource {block.resource.uri}]")
        elif block.type == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:  # images and audio: a text model can only be told they came
            parts.append(f"[{block.type}: {getattr(block, 'mime_type', '')}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _connection_lost(exc: Exception) -> bool:
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED

    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED


def _page(cursor: str | None) -> Any:
    from mcp.types import PaginatedRequestParams

    return PaginatedRequestParams(cursor=cursor) if cursor else None


def _reason(exc: BaseException) -> str:
    # anyio wraps a transport's failure in an exception group: the first leaf says what happened.
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------- the sessions' servers
_SERVERS: dict[str, dict[str, McpServer]] = {}


def session_servers(session: str) -> list[McpServer]:
    return list(_SERVERS.get(session, {}).values())


def session_tools(session: str, notify: Callable[[str], None]) -> list[LoopTool]:
    """The tools of the session's MCP servers, each started if it is not running; a server that cannot start is
    one line to ``notify`` and gives no tools."""
    tools: list[LoopTool] = []
    for server in session_servers(session):
        try:
            server.start()
        except McpServerError as exc:
            notify(str(exc))
            continue
        tools += [LoopTool(tool, server.needs_approval, f"mcp:{server.name}") for tool in server.tools]
    return tools


def stop_all() -> None:
    """Stop every session's servers (the extension is unloaded, or the kernel exits)."""
    for servers in _SERVERS.values():
        for server in servers.values():
            server.stop()


atexit.register(stop_all)


# ------------------------------------------------------------------------------- %hfchat mcp
_USAGE = "mcp [list] | mcp add NAME [--approve] -- COMMAND [ARGS...] | mcp add NAME URL [--approve] | mcp remove NAME"


@line_command("mcp", _USAGE)
def mcp_command(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    servers = _SERVERS.setdefault(session.name, {})
    action, rest = (words[0], list(words[1:])) if words else ("list", [])
    if action == "list":
        from .render import InfoTable

        rows = [(server.name, server.describe()) for server in servers.values()]
        magics.show(InfoTable(f"MCP servers of session {session.name!r}", rows or [("(none)", f"%hfchat {_USAGE}")]))
    elif action == "add":
        server = _server_from_words(rest)
        if server.name in servers:
            raise InvalidInputError(f"Session {session.name!r} has an MCP server {server.name!r}: remove it first.")
        servers[server.name] = server
        print(f"MCP server {server.name!r} added to session {session.name!r}: it starts when a cell first needs it.")
    elif action == "remove":
        if not rest or rest[0] not in servers:
            raise InvalidInputError(
                f"No MCP server {rest[0] if rest else ''!r} in session {session.name!r}: "
                f"it has {', '.join(servers) or 'none'}."
            )
        servers.pop(rest[0]).stop()
        print(f"MCP server {rest[0]!r} removed (stopped).")
    else:
        raise InvalidInputError(f"Unknown %hfchat mcp action {action!r}: use list, add or remove.")


def _server_from_words(words: list[str]) -> McpServer:
    """``NAME [--approve] -- COMMAND ARGS`` or ``NAME URL [--approve]`` as a server (not started).

    Raises:
        InvalidInputError: no name, or neither a command after ``--`` nor an http(s) URL.
    """
    own, command = (words[: words.index("--")], words[words.index("--") + 1 :]) if "--" in words else (words, [])
    approve = "--approve" in own
    own = [word for word in own if word != "--approve"]
    if not own:
        raise InvalidInputError(f"%hfchat mcp add needs a name: %hfchat {_USAGE}.")
    name, rest = own[0], own[1:]
    if command and not rest:
        return McpServer(name, command=command, approve=approve)
    if len(rest) == 1 and rest[0].startswith(("http://", "https://")) and not command:
        return McpServer(name, url=rest[0], approve=approve)
    raise InvalidInputError(
        "%hfchat mcp add NAME -- COMMAND [ARGS] starts a stdio server; %hfchat mcp add NAME URL connects to a "
        "streamable HTTP one (http:// or https://)."
    )
