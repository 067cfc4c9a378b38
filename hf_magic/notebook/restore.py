"""A conversation read back from a saved notebook: the turns its ``%%hfchat`` outputs recorded.

Each reply output carries ``{"hf_magic": {"user", "reply", "model", "session", ...}}`` in its metadata (see
``render.Reply``), so what the model said comes back exactly, not re-parsed from rendered text."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backend import Usage
from ..errors import InvalidInputError
from .turns import ToolStep, Turn


def running_notebook(user_ns: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Path | None:
    """The notebook this kernel runs, where the frontend says: VS Code's ``__vsc_ipynb_file__`` in the user
    namespace, or ``JPY_SESSION_NAME`` which Jupyter Server sets (a full path, or one relative to its root)."""
    environ = os.environ if environ is None else environ
    candidates = [str(user_ns.get("__vsc_ipynb_file__") or ""), environ.get("JPY_SESSION_NAME", "")]
    for candidate in filter(None, candidates):
        path = Path(candidate).expanduser()
        # A path relative to the server's root: the kernel runs in the notebook's folder, so try its name there.
        for option in (path, Path.cwd() / path.name):
            if option.suffix == ".ipynb" and option.is_file():
                return option
    return None


def _starts_over(source: str) -> bool:
    """True for a ``%%hfchat ... --new`` cell: the conversation restarted there."""
    first = source.lstrip().split("\n", 1)[0]
    try:
        return first.startswith("%%hfchat") and "--new" in shlex.split(first)
    except ValueError:
        return False


def _turn(record: Mapping[str, Any], key: str | None) -> Turn:
    usage = record.get("usage") or None
    return Turn(
        user=str(record["user"]),
        reply=str(record["reply"]),
        reasoning=str(record.get("reasoning") or ""),
        model=str(record.get("model") or ""),
        system_prompt=record.get("system_prompt"),
        usage=Usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0)) if usage else None,
        finish_reason=record.get("finish_reason"),
        interrupted=bool(record.get("interrupted")),
        key=key,
        time_to_first_token=record.get("time_to_first_token"),
        steps=[ToolStep.from_dict(step) for step in record.get("steps") or []],
    )


def read_notebook(path: str | Path) -> Any:
    """The notebook at ``path`` (an ``nbformat.NotebookNode``).

    Raises:
        InvalidInputError: no such file, or not a notebook.
    """
    import nbformat

    source = Path(path).expanduser()
    if not source.is_file():
        raise InvalidInputError(f"No notebook at {str(source)!r}: check the path (e.g. %hfchat restore chat.ipynb).")
    try:
        return nbformat.read(source, as_version=4)
    except Exception as exc:  # nbformat raises JSON, validation and reader errors of several kinds
        raise InvalidInputError(
            f"{source.name} is not a Jupyter notebook ({type(exc).__name__}): pick an .ipynb file."
        ) from exc


def notebook_turns(notebook: Any, session: str = "default") -> list[Turn]:
    """The turns of ``session`` that ``notebook``'s saved outputs hold, in cell order, as the session had them:
    a ``--new`` cell starts over, and each turn keeps its cell's id so that re-running that cell replaces it."""
    return [turn for turn, _ in _restored(notebook, session)]


def images_left_out(notebook: Any, session: str = "default") -> int:
    """How many images the turns ``notebook_turns`` restores were sent with: the saved outputs record their number,
    not their pixels, so the restored turns have none."""
    return sum(images for _, images in _restored(notebook, session))


def _restored(notebook: Any, session: str) -> list[tuple[Turn, int]]:
    """The restored turns, each with the number of images its saved output says it was sent with."""
    turns: list[tuple[Turn, int]] = []
    for cell in notebook.cells:
        if cell.get("cell_type") != "code":
            continue
        records = [
            output["metadata"]["hf_magic"]
            for output in cell.get("outputs", [])
            if isinstance(output.get("metadata", {}).get("hf_magic"), Mapping)
        ]
        records = [r for r in records if "user" in r and "reply" in r and (r.get("session") or "default") == session]
        if not records:
            continue
        if _starts_over(cell.get("source", "")):
            turns.clear()
        key = f"cell:{cell['id']}" if cell.get("id") else None
        turns.append((_turn(records[-1], key), int(records[-1].get("images") or 0)))
    return turns
