"""Helpers for turn-log tests: the raw bytes of a log file and its WAL, and a scripted streamed reply."""

from __future__ import annotations

from pathlib import Path

from tests.support.http_recorder import Reply, chunk


def every_byte(path: Path) -> bytes:
    """The bytes of the SQLite file at ``path`` and of its ``-wal`` and ``-shm`` files (what is on disk)."""
    parts = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return b"".join(part.read_bytes() for part in parts if part.exists())


def say(recorder, text: str) -> None:
    """Script the recorder's next streamed reply: ``text``, a stop, and usage (5 in, 2 out) as OpenAI sends it."""
    usage = {**chunk(), "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    recorder.replies.append(Reply(events=[chunk(text), chunk(finish_reason="stop"), usage, "[DONE]"]))
