"""A session's transcript on disk: exported as Markdown or reloadable JSON, and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .turns import Turn


def chat_messages(turns: list[Turn], system_prompt: str | None) -> list[dict[str, Any]]:
    """``turns`` as ``{"role", "content"}`` chat messages, the system prompt first when set. A message with images
    has OpenAI content parts, each image an ``image_url`` (a data URL when embedded)."""
    from ..chat_format import convert_messages
    from ..images import to_openai_image_part

    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for turn in turns:
        user: Any = turn.user
        if turn.images:
            user = [*(to_openai_image_part(block) for block in turn.images), {"type": "text", "text": turn.user}]
        messages.append({"role": "user", "content": user})
        # Tool steps as OpenAI writes them: an assistant message with "tool_calls", then one "tool" message each.
        steps = turn.messages()[1:-1]
        messages += [_without_reasoning(message) for message in convert_messages(steps)] if steps else []
        messages.append({"role": "assistant", "content": turn.reply})
    return messages


def _without_reasoning(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key != "reasoning_content"}


def export(
    path: str | Path,
    turns: list[Turn],
    *,
    name: str,
    spec: dict[str, Any],
    settings: dict[str, Any],
    include_reasoning: bool = False,
) -> Path:
    """Write ``turns`` to ``path``: Markdown (``.md``) or JSON (``.json``, which ``read`` loads back). JSON keeps
    the models' thinking; Markdown only with ``include_reasoning``.

    Raises:
        InvalidInputError: another suffix, a folder that does not exist, or a file that cannot be written.
    """
    from .turn_drawing import transcript_markdown

    target = Path(path).expanduser()
    if target.suffix == ".json":
        data = {
            "session": name,
            "spec": spec,
            "settings": settings,
            "turns": [turn.to_dict() for turn in turns],
            "messages": chat_messages(turns, settings.get("system_prompt")),
        }
        text = json.dumps(data, indent=2)
    elif target.suffix in (".md", ".markdown"):
        text = transcript_markdown(turns, title=f"hf_magic session: {name}", include_reasoning=include_reasoning)
    else:
        raise InvalidInputError(f"Cannot export to {target.name!r}: use a .md or .json file name.")
    folder = target.parent
    if not folder.is_dir():
        raise InvalidInputError(
            f"Cannot export to {str(target)!r}: the folder {str(folder)!r} does not exist; "
            "create it first or pick another path."
        )
    try:
        target.write_text(text)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InvalidInputError(
            f"Cannot write {str(target)!r} ({reason}): pick a file in a folder you can write to."
        ) from exc
    return target


def read(path: str | Path) -> tuple[list[Turn], str | None]:
    """The turns and the system prompt (``None`` when the export has none) of a JSON export.

    Raises:
        InvalidInputError: no such file, or not an export.
    """
    source = Path(path).expanduser()
    try:
        data = json.loads(source.read_text())
        turns = [Turn.from_dict(item) for item in data["turns"]]
        system_prompt = (data.get("settings") or {}).get("system_prompt")
    except FileNotFoundError as exc:
        raise InvalidInputError(f"No file at {str(source)!r}: check the path.") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInputError(f"{source.name} is not a transcript exported by `%hfchat export x.json`.") from exc
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {str(source)!r} ({exc.strerror or type(exc).__name__}).") from exc
    return turns, system_prompt
