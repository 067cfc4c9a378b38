"""The tools a session's cells offer the model, and the tool loop a cell runs with them.

A session's tools are names: functions of the user's namespace (looked up at each cell, so a redefined function is
the one called), ``notebook`` for the notebook tools, and the tools of the session's MCP servers, which join by
themselves. ``%hfchat tools add|list|remove`` keeps them, ``%config HfChatMagics.tools`` gives new sessions theirs,
and ``%%hfchat --tools`` adds some for one cell. Schemas come from langchain-core's tool helpers (signature, type
hints, docstring).
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, StructuredTool

from ..errors import InvalidInputError
from . import mcp_servers
from .approval import approver
from .line_commands import line_command
from .notebook_tools import NOTEBOOK, notebook_tools
from .render import InfoTable
from .tool_loop import DEFAULT_MAX_STEPS, LoopTool, ToolLoop

if TYPE_CHECKING:
    from .magics import HfChatMagics
    from .session import ChatSession


@dataclass
class SessionTools:
    """One session's tool names, which of them need the user's approval, and which the user approved for good."""

    names: list[str] = field(default_factory=list)
    approval: set[str] = field(default_factory=set)
    """Names whose every call asks first (``tools add NAME --approve``); notebook's run_code always asks."""
    always: set[str] = field(default_factory=set)
    """Tools the user answered "Always this session" for."""

    def add(self, names: Sequence[str], needs_approval: bool = False) -> None:
        for name in names:
            if name not in self.names:
                self.names.append(name)
            if needs_approval:
                self.approval.add(name)


_TOOLS: dict[str, SessionTools] = {}


def session_tools(session: ChatSession, defaults: Sequence[str] = ()) -> SessionTools:
    """The tools of ``session``, made on first use with ``defaults`` (``%config HfChatMagics.tools``)."""
    if session.name not in _TOOLS:
        _TOOLS[session.name] = SessionTools(names=split_names(defaults))
    return _TOOLS[session.name]


def split_names(words: Sequence[str] | str | None) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` as names, in order, each once."""
    if not words:
        return []
    pieces = [words] if isinstance(words, str) else list(words)
    names: list[str] = []
    for piece in pieces:
        for name in piece.split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
    return names


def function_tool(name: str, function: Any) -> BaseTool:
    """A tool from a callable of the user's namespace: its schema from the signature, type hints and docstring
    (Google-style ``Args:`` describe the parameters).

    Raises:
        InvalidInputError: ``function`` is not callable, or its signature cannot become a schema.
    """
    if isinstance(function, BaseTool):
        return function
    if not callable(function):
        raise InvalidInputError(
            f"{name!r} is a {type(function).__name__}, not a function: --tools takes names of functions defined in "
            f"the notebook, or '{NOTEBOOK}'."
        )
    try:
        description = inspect.getdoc(function) or f"{name}{inspect.signature(function)}"
        return StructuredTool.from_function(
            function, name=name, description=description, parse_docstring=True, error_on_invalid_docstring=False
        )
    except Exception as exc:  # pydantic and inspect fail in many ways on odd callables
        raise InvalidInputError(
            f"{name!r} cannot be a tool ({type(exc).__name__}: {exc}): wrap it in a def with type hints."
        ) from exc


def resolve(
    names: Sequence[str], tools: SessionTools, namespace: Mapping[str, Any], shell: Any, cell_errors: Any
) -> list[LoopTool]:
    """``names`` as tools: ``notebook`` as the notebook tools, anything else a callable of ``namespace``.

    Raises:
        InvalidInputError: a name that is not defined, or not callable.
    """
    resolved: list[LoopTool] = []
    for name in names:
        if name == NOTEBOOK:
            for tool in notebook_tools(shell, cell_errors):
                tool.needs_approval = tool.needs_approval or NOTEBOOK in tools.approval or tool.name in tools.approval
                resolved.append(tool)
        elif name not in namespace:
            raise InvalidInputError(
                f"No function {name!r} in the notebook: define it first, or check --tools (names are comma-separated)."
            )
        else:
            resolved.append(LoopTool(function_tool(name, namespace[name]), needs_approval=name in tools.approval))
    return resolved


def cell_tool_loop(magics: HfChatMagics, session: ChatSession, options: argparse.Namespace) -> ToolLoop | None:
    """The tool loop of a ``%%hfchat`` cell: the session's tools, the cell's ``--tools`` and the session's MCP servers'
    tools; ``None`` when there are none (the cell is a plain message). Its ``on_change`` and ``context_length`` are
    the caller's to set once the view and the model are there.

    Raises:
        InvalidInputError: a bad tool name, ``--tool-choice`` naming no tool, ``--max-steps`` under 1, or those two
            without any tool.
    """
    tools = session_tools(session, magics.tools)
    names = [*tools.names, *(name for name in split_names(options.tools) if name not in tools.names)]
    namespace = magics.shell.user_ns if magics.shell is not None else {}
    resolved = resolve(names, tools, namespace, magics.shell, magics.cell_errors)
    resolved += mcp_servers.session_tools(session.name, notify=print)
    if not resolved:
        if options.tool_choice is not None or options.max_steps is not None:
            raise InvalidInputError("--tool-choice and --max-steps need tools: add --tools NAME[,NAME...].")
        return None
    return ToolLoop(
        resolved,
        tool_choice=options.tool_choice,
        max_steps=options.max_steps if options.max_steps is not None else DEFAULT_MAX_STEPS,
        approve=approver(magics.notebook, tools.always, magics.shell),
    )


# ------------------------------------------------------------------------------ %hfchat tools
@line_command(
    "tools",
    "tools [list] | tools add NAME[,NAME...] [--approve] | tools remove NAME[,NAME...] | tools allow NAME[,NAME...]",
)
def tools_command(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    tools = session_tools(session, magics.tools)
    action, rest = (words[0], list(words[1:])) if words else ("list", [])
    if action == "list":
        magics.show(tools_table(magics, session, tools))
    elif action == "add":
        names = split_names([word for word in rest if word != "--approve"])
        if not names:
            raise InvalidInputError("%hfchat tools add needs names: %hfchat tools add my_function[,notebook].")
        namespace = magics.shell.user_ns if magics.shell is not None else {}
        resolve(names, tools, namespace, magics.shell, magics.cell_errors)  # a bad name fails before any is added
        tools.add(names, needs_approval="--approve" in rest)
        print(f"Session {session.name!r} tools: {', '.join(tools.names)}")
    elif action == "remove":
        names = split_names(rest)
        unknown = [name for name in names if name not in tools.names]
        if unknown or not names:
            raise InvalidInputError(
                f"Not a tool of session {session.name!r}: {', '.join(unknown) or '(no name given)'}; "
                f"it has {', '.join(tools.names) or 'none'}."
            )
        tools.names = [name for name in tools.names if name not in names]
        tools.approval -= set(names)
        print(f"Session {session.name!r} tools: {', '.join(tools.names) or 'none'}")
    elif action == "allow":  # "Always this session" said ahead: for notebooks run unattended, where nobody can click
        names = ["run_code" if name == NOTEBOOK else name for name in split_names(rest)]
        if not names:
            raise InvalidInputError("%hfchat tools allow needs tool names: %hfchat tools allow run_code.")
        tools.always.update(names)
        print(f"Session {session.name!r} runs {', '.join(names)} without asking, as 'Always this session' would.")
    else:
        raise InvalidInputError(f"Unknown %hfchat tools action {action!r}: use list, add, remove or allow.")


def tools_table(magics: HfChatMagics, session: ChatSession, tools: SessionTools) -> InfoTable:
    """What the model is offered in this session: each tool, where it comes from, and whether it asks first."""
    rows: list[tuple[str, str]] = []
    namespace = magics.shell.user_ns if magics.shell is not None else {}
    for name in tools.names:
        if name == NOTEBOOK:
            note = "" if "run_code" in tools.always else " (asks first)"
            where = f"notebook tools: list_variables, describe_variable, read_cell, run_code{note}"
        elif name in namespace and callable(namespace[name]):
            asks = name in tools.approval and name not in tools.always
            where = "function" + (" (asks first)" if asks else "")
        else:
            where = "not defined in the notebook now"
        rows.append((name, where))
    for server in mcp_servers.session_servers(session.name):
        rows.append((f"mcp:{server.name}", server.describe()))
    if not rows:
        rows.append(("(none)", "add with %hfchat tools add NAME, or %%hfchat --tools NAME"))
    return InfoTable(f"Tools of session {session.name!r}", rows)
