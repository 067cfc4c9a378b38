"""The built-in ``%hfchat`` subcommands on a session: history, reset, usage, export, load, unload, status, models,
panel, fix and restore. Each is registered in line_commands and gets the magics, the session and its words."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import HfMagicError, InvalidInputError
from .cell_errors import fix_prompt
from .info_tables import models_table, status_table
from .line_commands import line_command
from .render import Transcript, UsageReport
from .restore import images_left_out, notebook_turns, read_notebook, running_notebook

if TYPE_CHECKING:
    from .magics import HfChatMagics
    from .session import ChatSession


@line_command("history", "history")
def history(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    magics.show(Transcript(session.turns, title=f"Session {session.name!r}"))


@line_command("reset", "reset")
def reset(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    session.reset()
    print(f"Session {session.name!r}: conversation cleared (the model stays loaded).")


@line_command("usage", "usage")
def usage(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    magics.show(UsageReport(session.turns, session.context_fill()))


@line_command("export", "export PATH [--thinking]")
def export(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    paths = [word for word in words if word != "--thinking"]
    if not paths:
        raise InvalidInputError("%hfchat export needs a file path, e.g. %hfchat export chat.json.")
    target = session.export(paths[0], include_reasoning="--thinking" in words)
    print(f"Exported {len(session.turns)} turns to {target}")


@line_command("load", "load PATH")
def load(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    if not words:
        raise InvalidInputError("%hfchat load needs a file path, e.g. %hfchat load chat.json.")
    session.load_transcript(words[0])
    print(f"Session {session.name!r}: loaded {len(session.turns)} turns from {words[0]}")


@line_command("unload", "unload")
def unload(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    was_loaded = session.loaded
    session.unload()
    print(f"Session {session.name!r}: model unloaded." if was_loaded else "No model was loaded.")


@line_command("status", "status")
def status(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    magics.show(status_table(session))


@line_command("models", "models")
def models(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    magics.show(models_table())


@line_command("panel", "panel")
def panel(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    try:
        from .panel import ChatPanel
    except ImportError as exc:
        raise HfMagicError("The chat panel is not available in this version of hf_magic.") from exc
    ChatPanel(session).display()


@line_command("fix", "fix")
def fix(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    """Send the last error and its cell's code; the corrected code goes into a new cell."""
    error = magics.cell_errors.last()
    if error is None:
        print("No error so far: run the cell that fails, then %hfchat fix.")
        return
    options = magics.parse_cell_options(f"--session {shlex.quote(session.name)} --format code")
    # The message quotes code: {braces} in it are code, never interpolated.
    magics.run_cell(options, fix_prompt(error), may_interpolate=False)


@line_command("restore", "restore [NOTEBOOK]")
def restore(magics: HfChatMagics, session: ChatSession, words: Sequence[str]) -> None:
    """Rebuild the conversation from a saved notebook's ``%%hfchat`` outputs (default: the one this kernel runs)."""
    path = words[0] if words else None
    if path is None:
        found = running_notebook(magics.shell.user_ns if magics.shell is not None else {})
        if found is None:
            raise InvalidInputError(
                "Cannot tell which notebook this kernel runs: give its path, e.g. %hfchat restore chat.ipynb."
            )
        path = str(found)
    notebook = read_notebook(path)
    turns = notebook_turns(notebook, session.name)
    if not turns:
        raise InvalidInputError(
            f"{path} holds no saved %%hfchat reply of session {session.name!r}: save the notebook with its "
            "outputs, or name the session with --session NAME."
        )
    session.restore_turns(turns, turns[-1].system_prompt, action="restore a conversation")
    print(f"Session {session.name!r}: restored {len(turns)} turns from {path}")
    skipped = images_left_out(notebook, session.name)
    if skipped:
        print(
            f"{skipped} image(s) sent in those turns were left out: a saved notebook keeps only their thumbnails; "
            "send them again with --image to ask about them."
        )
