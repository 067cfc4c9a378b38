"""``%hfchat engine [status|log]``: the engine hf_magic started for the session's model, and where cells and the
panel take an engine's Python and arguments from (``%config HfChatMagics.engine_python`` / ``engine_args``).

A gateway to remote/engines.py, as model_spec.py is to the backends: views read engines only through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from ..remote.engines import DEFAULTS, ManagedEngine, last_started
from .line_commands import line_command

if TYPE_CHECKING:
    from .magics import HfChatMagics
    from .session import ChatSession

LOG_LINES = 200
"""The log's last lines ``%hfchat engine log`` prints (vLLM logs ~150 lines while it starts)."""


def configure_engines(python: str | dict[str, Any] | None, arguments: dict[str, Any] | None) -> None:
    """Set the Python (one, or one per engine) and per-engine arguments that engines start with from now on."""
    if isinstance(python, dict):
        DEFAULTS.python = {str(name): str(value) for name, value in python.items() if value}
    else:
        DEFAULTS.python = python or None
    DEFAULTS.arguments = {str(name): str(value) for name, value in (arguments or {}).items()}


def session_engine(session: ChatSession) -> ManagedEngine | None:
    """The engine the session's model talks to, else the one this kernel started last (a failed start too)."""
    engine = getattr(getattr(session.chat_model, "llm", None), "engine", None)
    return engine if isinstance(engine, ManagedEngine) else last_started()


@line_command("engine", "engine [status|log]")
def engine(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    print(engine_command(session, words[0] if words else None))


def engine_command(session: ChatSession, argument: str | None) -> str:
    """What ``%hfchat engine ARGUMENT`` prints.

    Raises:
        InvalidInputError: an argument other than ``status`` or ``log``.
    """
    if argument not in (None, "status", "log"):
        raise InvalidInputError(
            f"Unknown %hfchat engine {argument!r}: use %hfchat engine status or %hfchat engine log."
        )
    engine = session_engine(session)
    if engine is None:
        return "No engine was started in this kernel: run a cell with --engine vllm or --engine llama.cpp."
    if argument == "log":
        lines = engine.log_text().splitlines()
        cut = f"(the first {len(lines) - LOG_LINES} lines are in {engine.log_path})\n" if len(lines) > LOG_LINES else ""
        return f"{engine_status(engine)}\n{cut}" + "\n".join(lines[-LOG_LINES:])
    return engine_status(engine)


def engine_status(engine: ManagedEngine) -> str:
    state = "running" if engine.running else f"stopped (exit code {engine.process.returncode})"
    return (
        f"{engine.engine} serving {engine.served_name} at {engine.url}: {state}; Python {engine.python}; "
        f"log {engine.log_path}"
    )
