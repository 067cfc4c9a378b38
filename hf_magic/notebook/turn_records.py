"""A turn as the turn log keeps it: the columns of one row, and the row read back as the Turn it was.

The text a person searches (message, reply, thinking, tool calls) has columns of its own; the rest of the Turn
(usage, timings, steps, settings, the model spec) is one JSON record. Images are kept as references and hashes,
never pixels: an image comes back from a URL, or from a file whose bytes still hash the same. Known access tokens
are blanked from everything written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import ImageError
from ..images import image_block, image_source
from .turns import ToolStep, Turn

_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
"""A Hugging Face access token's shape (``hf_`` and 34 letters and digits): blanked wherever it shows up."""
_OWN_FORM = ("user", "reply", "reasoning", "images", "usage")
_URL_PASSWORD = re.compile(r"(?<=://)([^/@\s:]+):[^/@\s]+@")


@dataclass
class LoggedTurn:
    """One row of the log: the Turn it rebuilds, and where and how it happened."""

    id: int
    conversation: str
    logged_at: float
    session: str
    kernel: str
    turn: Turn
    ended: str = "finished"
    """How it ended: "finished" (the reply came whole), "stopped" (Stop cut it), "interrupted" (Ctrl-C, the kernel's
    interrupt), or "error" (it failed, and the session kept no turn)."""
    notebook: str | None = None
    error: str | None = None
    carried: bool = False
    """The turn came in with a restore or a load: it was not sent in this conversation."""
    origin: int | None = None
    """The row a restored turn was copied from (``None`` for new turns, and turns loaded from files)."""
    spec: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    images_left_out: int = 0
    """Images the turn was sent with that could not be brought back (pixels that were never a file or URL, or a
    file that changed since)."""

    @property
    def backend(self) -> str:
        return str(self.spec.get("backend") or "")


def row_values(
    turn: Turn,
    *,
    conversation: str,
    session: str,
    kernel: str,
    ended: str,
    logged_at: float,
    notebook: str | None = None,
    error: str | None = None,
    spec: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    carried: bool = False,
    origin: int | None = None,
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """The column values of ``turn``'s row, every text blanked of ``secrets`` and anything shaped like a token."""
    # Every field but the searchable text, the images and the usage (turned into their own forms below), so a
    # field the Turn gains later is logged too.
    record = {f.name: _plain(getattr(turn, f.name)) for f in fields(turn) if f.name not in _OWN_FORM}
    record["usage"] = turn.usage.as_usage_metadata() if turn.usage else None
    record["images"] = [image_reference(block) for block in turn.images]
    record["spec"] = spec or {}
    record["settings"] = settings or {}
    usage = turn.usage
    values: dict[str, Any] = {
        "conversation": conversation,
        "logged_at": logged_at,
        "session": session,
        "kernel": kernel,
        "notebook": notebook,
        "cell": turn.key,
        "ended": ended,
        "origin": origin,
        "carried": int(carried),
        "model": turn.model,
        "backend": (spec or {}).get("backend"),
        "user": turn.user,
        "reply": turn.reply,
        "reasoning": turn.reasoning,
        "tools": tools_text(turn.steps),
        "error": error,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "duration": turn.duration,
        "record": json.dumps(record, ensure_ascii=False, default=str),
    }
    known = [secret for secret in secrets if secret and len(secret) >= 8]
    return {name: blank_secrets(value, known) if isinstance(value, str) else value for name, value in values.items()}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def event_values(
    kind: str,
    text: str,
    detail: dict[str, Any],
    *,
    conversation: str,
    session: str,
    kernel: str,
    logged_at: float,
    notebook: str | None = None,
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """The row of a capability's event (its JSON-ready ``detail`` kept as it is), blanked like a turn's."""
    known = [secret for secret in secrets if secret and len(secret) >= 8]
    detail_text = blank_secrets(json.dumps(detail, ensure_ascii=False, default=str), known)
    return {
        "table": "events",
        "conversation": conversation,
        "logged_at": logged_at,
        "session": session,
        "kernel": kernel,
        "notebook": notebook,
        "kind": kind,
        "text": blank_secrets(text, known),
        "detail": detail_text,
    }


def blank_secrets(text: str, secrets: Sequence[str]) -> str:
    """``text`` with each of ``secrets``, any token-shaped word and any password in a URL replaced by ``***``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    if "hf_" in text:
        text = _HF_TOKEN.sub("***", text)
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(r"\1:***@", text)
    return text


def tools_text(steps: Sequence[ToolStep]) -> str:
    """The tool calls of a turn as searchable text: ``name {args} -> result``, one per line."""
    lines = []
    for step in steps:
        for call in step.calls:
            args = json.dumps(call.args, ensure_ascii=False, default=str)
            lines.append(f"{call.name} {args} -> {call.result or ''} [{call.status}]")
    return "\n".join(lines)


def image_reference(block: dict[str, Any]) -> dict[str, Any]:
    """What the log keeps of an image: where it came from (a URL or a file path) and the hash of its bytes."""
    reference: dict[str, Any] = {"type": "image_reference"}
    path = (block.get("extras") or {}).get("path") or block.get("path")
    if path:
        reference["path"] = str(path)
    try:
        source = image_source(block)
    except ImageError:
        source = None
    if source is not None and source.url is not None:
        reference["url"] = source.url
    elif source is not None and source.data is not None:
        reference["sha256"] = hashlib.sha256(source.data).hexdigest()
        reference["bytes"] = len(source.data)
    reference["mime_type"] = block.get("mime_type") or (source.mime_type if source else None)
    return reference


def image_from_reference(reference: dict[str, Any]) -> dict[str, Any] | None:
    """The image block a reference names, or ``None`` when its pixels cannot be had again unchanged."""
    if reference.get("url"):
        return {"type": "image", "url": reference["url"]}
    path = reference.get("path")
    if not path or not Path(path).is_file():
        return None
    try:
        block = image_block(path)
    except ImageError:
        return None
    data = image_source(block).data or b""
    if reference.get("sha256") and hashlib.sha256(data).hexdigest() != reference["sha256"]:
        return None  # the file changed since: these are not the pixels the model saw
    return {**block, "extras": {"path": path}}


def logged_turn(row: Any) -> LoggedTurn:
    """A ``turns`` row (``sqlite3.Row``) as the LoggedTurn it records."""
    record = json.loads(row["record"])
    spec, settings = record.pop("spec", {}) or {}, record.pop("settings", {}) or {}
    references = record.pop("images", []) or []
    images = [image_from_reference(reference) for reference in references]
    turn = Turn.from_dict({**record, "user": row["user"], "reply": row["reply"], "reasoning": row["reasoning"]})
    turn.images = [block for block in images if block is not None]
    return LoggedTurn(
        id=int(row["id"]),
        conversation=row["conversation"],
        logged_at=float(row["logged_at"]),
        session=row["session"],
        kernel=row["kernel"],
        turn=turn,
        ended=row["ended"],
        notebook=row["notebook"],
        error=row["error"],
        carried=bool(row["carried"]),
        origin=row["origin"],
        spec=spec,
        settings=settings,
        images_left_out=len(images) - len(turn.images),
    )


def transcript_of(entries: Sequence[LoggedTurn]) -> list[Turn]:
    """The turns a session held after ``entries`` (one conversation, in order): a failed turn was never kept, and
    a turn from a cell that ran again took its place, as ``ChatSession`` records them."""
    turns: list[Turn] = []
    for entry in entries:
        if entry.ended == "error":
            continue
        turn = entry.turn
        at = next((i for i, kept in enumerate(turns) if turn.key is not None and kept.key == turn.key), None)
        if at is None:
            turns.append(turn)
        else:
            turns[at] = turn
    return turns
