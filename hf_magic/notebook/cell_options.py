"""What a ``%%hfchat`` line and cell ask for: subcommands, ``{name}`` interpolation, the spec a cell's options
give, and the message ``-o VAR`` receives. Pure functions: nothing here needs IPython."""

from __future__ import annotations

import argparse
import hashlib
import keyword
import re
import shlex
import string
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from langchain_core.messages import AIMessage

from ..errors import HfMagicError, InvalidInputError
from .model_spec import ModelSpec
from .turns import Turn

_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[[^\[\]{}]+\])*)\}(?!\})")


def interpolate(
    text: str,
    namespace: Mapping[str, Any],
    render: Callable[[Any], str] = str,
    used: dict[str, str] | None = None,
) -> str:
    """Replace ``{name}``, ``{name.attr}`` and ``{name[key]}`` with ``render(value)`` of values from ``namespace``
    (``cell_images.ImageFields`` takes images out of the text).

    Brace-safe: anything else (dict literals, JSON, ``{unknown}``, ``{{escaped}}``) is left as written,
    so pasting code into an interpolated cell does not break it. An ``HfMagicError`` a value raises (``{Err[9]}``
    of a cell that raised nothing) propagates. ``used``, when given, receives each field and the text it became.

    Raises:
        HfMagicError: raised by a namespace value (see ``CellErrors``).
    """
    formatter = string.Formatter()

    def substitute(match: re.Match[str]) -> str:
        name = re.match(r"[A-Za-z_]\w*", match.group(1))
        if name is None or name.group(0) not in namespace:
            return match.group(0)
        try:
            value, _ = formatter.get_field(match.group(1), (), namespace)
        except HfMagicError:
            raise
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            return match.group(0)
        rendered = render(value)
        if used is not None:
            used[match.group(1)] = rendered
        return rendered

    return _FIELD.sub(substitute, text)


def field_names(text: str) -> list[str]:
    """The ``{name}`` fields ``interpolate`` would replace in ``text``, as written (``name``, ``name.attr``,
    ``name[key]``), in order; dict literals, JSON and ``{{escaped}}`` braces are not fields."""
    return [match.group(1) for match in _FIELD.finditer(text)]


def cell_key(cell: str, cell_id: str | None) -> str:
    """What identifies "this cell" for re-run replacement: the notebook's cell id, else the cell's text."""
    if cell_id:
        return f"cell:{cell_id}"
    return "text:" + hashlib.sha1(cell.strip().encode()).hexdigest()[:16]


def spec_from_options(current: ModelSpec, options: argparse.Namespace) -> ModelSpec:
    """The session's spec with every option the cell gave applied (unspecified options keep their value)."""
    changes: dict[str, Any] = {}
    if options.model is not None:
        changes["model"] = options.model
    if options.endpoint_url is not None:
        changes["endpoint_url"] = options.endpoint_url or None
        changes.setdefault("backend", "endpoint")
    if options.backend is not None:
        changes["backend"] = options.backend
    changes.update(_engine_changes(current, options, changes))
    if options.provider is not None:
        changes["provider"] = options.provider
    if options.quantize is not None:
        changes["quantize"] = None if options.quantize == "none" else options.quantize
    if options.device is not None:
        changes["device"] = options.device
    if options.dtype is not None:
        changes["dtype"] = options.dtype
    if changes.get("backend") == "pipeline":
        changes.setdefault("endpoint_url", None)
    return replace(current, **changes) if changes else current


def _engine_changes(current: ModelSpec, options: argparse.Namespace, changes: dict[str, Any]) -> dict[str, Any]:
    """``--engine`` / ``--gguf-file`` (a ``.gguf`` model implies llama.cpp); ``--backend`` or ``--endpoint-url``
    alone leaves the engine."""
    engine = getattr(options, "engine", None)
    gguf_file = getattr(options, "gguf_file", None)
    model = changes.get("model", current.model)
    if engine is None and (gguf_file is not None or (options.model or "").endswith(".gguf")):
        engine = "llama.cpp"
    if engine is not None:
        # An --endpoint-url given with it stays, for ModelSpec to refuse the pair in one line.
        url = changes.get("endpoint_url") if options.endpoint_url else None
        return {"engine": engine, "gguf_file": gguf_file, "backend": "endpoint", "endpoint_url": url}
    if "backend" in changes or "endpoint_url" in changes:
        return {"engine": None, "gguf_file": None}
    if "model" in changes and model != current.model and current.engine:
        return {"gguf_file": None}  # another model on the same engine: the old repo's file name means nothing
    return {}


def check_options(options: argparse.Namespace) -> None:
    """Refuse what argparse lets through but cannot work, in the magic's own words.

    Raises:
        InvalidInputError: ``-o`` is not a variable name, or ``--history-limit`` is negative.
    """
    name = options.output
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        why = "a Python keyword" if keyword.iskeyword(name) else "not a valid variable name"
        raise InvalidInputError(f"-o {name!r} is {why}: use a name like reply or answer_1.")
    if options.history_limit is not None and options.history_limit < 0:
        raise InvalidInputError(
            f"--history-limit must be 0 or more, got {options.history_limit}: 0 sends no earlier turns."
        )


def reply_message(turn: Turn) -> AIMessage:
    """A finished turn as the AIMessage ``-o VAR`` stores in the user's namespace; a turn that called tools has
    its steps (each call's name, arguments, id, result, status and duration) in ``response_metadata["tool_steps"]``
    and the usage of all its model calls."""
    steps = {"tool_steps": [asdict(step) for step in turn.steps]} if turn.steps else {}
    return AIMessage(
        content=turn.reply,
        additional_kwargs={"reasoning_content": turn.reasoning} if turn.reasoning else {},
        usage_metadata=turn.usage.as_usage_metadata() if turn.usage else None,
        response_metadata={
            "model_name": turn.model,
            "finish_reason": turn.finish_reason,
            "interrupted": turn.interrupted,
            "time_to_first_token": turn.time_to_first_token,
            **steps,
        },
    )


@dataclass(frozen=True)
class Subcommand:
    name: str
    argument: str | None
    session: str | None
    words: tuple[str, ...] = ()
    """Every word after the name (``--session NAME`` taken out), for subcommands registered in line_commands."""


def parse_subcommand(line: str) -> Subcommand:
    """``history``, ``export PATH --session NAME``... as a Subcommand.

    Raises:
        InvalidInputError: an unknown subcommand or a missing path.
    """
    from .line_commands import registered

    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise InvalidInputError(f"Cannot parse {line!r}: {exc}; check the quotes.") from exc
    session = None
    # ``--session NAME`` is the line's own up to a ``--``; what follows that belongs to the subcommand (a command).
    own = words.index("--") if "--" in words else len(words)
    if "--session" in words[:own]:
        at = words.index("--session")
        if at + 1 >= own:
            raise InvalidInputError("--session needs a name: %hfchat history --session NAME.")
        session = words[at + 1]
        del words[at : at + 2]
    names = [*registered(), "debug"]
    if not words or words[0] not in names:
        given = words[0] if words else ""
        raise InvalidInputError(
            f"Unknown %hfchat subcommand {given!r}: use one of {', '.join(names)}; "
            "to send a message use the %%hfchat cell magic."
        )
    if words[0] in ("export", "load") and len(words) < 2:
        raise InvalidInputError(f"%hfchat {words[0]} needs a file path, e.g. %hfchat {words[0]} chat.json.")
    return Subcommand(words[0], words[1] if len(words) > 1 else None, session, tuple(words[1:]))
