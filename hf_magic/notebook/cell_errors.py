"""The exceptions cells raised, by execution count: what ``{Err[n]}`` and ``%hfchat fix`` read.

IPython keeps no per-cell errors, so the extension records them from its ``post_run_cell`` event."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..errors import InvalidInputError
from .variables import cut

TRACEBACK_FRAMES = 3
"""Frames of the traceback kept (the last ones, nearest the error): enough to place it, short for a prompt."""
MAX_ERROR_CHARS = 3000


@dataclass(frozen=True)
class CellError:
    """One cell's exception and the code of that cell (``None`` where it is not known)."""

    execution_count: int | None
    error: BaseException
    code: str | None

    def describe(self) -> str:
        """Type, message and the traceback's last frames, as the text a model reads."""
        where = f"Cell [{self.execution_count}]" if self.execution_count is not None else "The last cell"
        frames = _without_ipython_frames(self.error.__traceback__)
        lines = traceback.format_exception(type(self.error), self.error, frames, limit=-TRACEBACK_FRAMES)
        return cut(
            f"{where} raised {type(self.error).__name__}: {self.error}\n{''.join(lines).rstrip()}", MAX_ERROR_CHARS
        )


def _without_ipython_frames(frames: TracebackType | None) -> TracebackType | None:
    """The traceback from the cell's own code on: IPython's ``run_code`` frame that runs every cell tells a model
    nothing about the error."""
    ipython = sys.modules.get("IPython")
    folder = os.path.dirname(ipython.__file__) if ipython is not None and ipython.__file__ else None
    while folder and frames is not None and frames.tb_next is not None:
        if not frames.tb_frame.f_code.co_filename.startswith(folder + os.sep):
            break
        frames = frames.tb_next
    return frames


class CellErrors(Mapping[int, str]):
    """Errors of this kernel's cells by execution count; as a Mapping, ``Err[n]`` is cell n's error as text.

    ``record`` is the ``post_run_cell`` callback. An error raised before the extension was loaded is known only
    as the last one (``sys.last_exc`` / ``sys.last_value``, which IPython sets when it shows a traceback).
    """

    def __init__(self) -> None:
        self._errors: dict[int, CellError] = {}
        self._latest: CellError | None = None

    def record(self, result: Any) -> None:
        """Keep the error of a finished cell (an IPython ``ExecutionResult``), if it raised one."""
        error = result.error_in_exec or result.error_before_exec
        if error is None:
            return
        info = getattr(result, "info", None)
        count = result.execution_count
        entry = CellError(count, error, getattr(info, "raw_cell", None))
        if count is not None:
            self._errors[count] = entry
        self._latest = entry

    def last(self) -> CellError | None:
        """The most recent error: recorded, else the one Python kept from before the extension was loaded."""
        if self._latest is not None:
            return self._latest
        error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
        return CellError(None, error, None) if isinstance(error, BaseException) else None

    def __getitem__(self, key: int | str) -> str:
        try:
            count = int(key)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{{Err[{key}]}}: use a cell's execution count, e.g. {{Err[3]}}.") from None
        if count < 0 and -count <= len(self._errors):  # {Err[-1]}: the latest recorded, as In[-1] is
            count = sorted(self._errors)[count]
        if count not in self._errors:
            known = ", ".join(str(n) for n in sorted(self._errors)) or "none since %load_ext hf_magic"
            raise InvalidInputError(f"Cell [{count}] raised no error that hf_magic saw (cells with errors: {known}).")
        return self._errors[count].describe()

    def __str__(self) -> str:
        """``{Err}`` on its own: the latest error."""
        last = self.last()
        return last.describe() if last is not None else "(no error so far)"

    def __contains__(self, key: object) -> bool:
        return key in self._errors

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._errors))

    def __len__(self) -> int:
        return len(self._errors)


def fix_prompt(error: CellError) -> str:
    """What ``%hfchat fix`` sends: the error and the code that raised it, asking for a cause and a corrected cell."""
    parts = [
        "My notebook cell raised an error. Explain briefly what caused it, then give a corrected version of the "
        "whole cell in one ```python code block."
    ]
    if error.code and error.code.strip():
        parts.append(f"The cell:\n```python\n{cut(error.code.strip(), MAX_ERROR_CHARS)}\n```")
    parts.append(f"The error:\n```\n{error.describe()}\n```")
    return "\n\n".join(parts)
