"""Helpers for turn-log tests: a log folder of the test's own, the raw bytes of a log file and its WAL, and a
scripted streamed reply."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.http_recorder import Reply, chunk


@pytest.fixture
def log_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A turn log of the test's own: ``HF_MAGIC_HOME`` in ``tmp_path`` (not created yet), logging not switched off."""
    monkeypatch.setenv("HF_MAGIC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_MAGIC_NO_LOG", raising=False)
    return tmp_path / "home"


def every_byte(path: Path) -> bytes:
    """The bytes of the SQLite file at ``path`` and of its ``-wal`` and ``-shm`` files (what is on disk)."""
    parts = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return b"".join(part.read_bytes() for part in parts if part.exists())


def say(recorder, text: str) -> None:
    """Script the recorder's next streamed reply: ``text``, a stop, and usage (5 in, 2 out) as OpenAI sends it."""
    usage = {**chunk(), "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    recorder.replies.append(Reply(events=[chunk(text), chunk(finish_reason="stop"), usage, "[DONE]"]))
