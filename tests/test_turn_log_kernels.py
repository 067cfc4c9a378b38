"""The turn log with real Jupyter kernels on the default model: a kernel killed (SIGKILL) mid-reply loses only that
reply, and a new kernel restores every finished turn field for field; an interrupt is logged as one; two kernels
logging at once lose and mix nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hf_magic.notebook.turn_log import TurnLog
from hf_magic.notebook.turn_records import transcript_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

DUMP = (
    "import json\nfrom hf_magic.notebook.session import get_session\n"
    "json.dump([t.to_dict() for t in get_session({session!r}).turns], open({path!r}, 'w'))"
)


class Kernel:
    """A real IPython kernel (jupyter_client) whose turn log is ``home``; cells run one at a time or queued."""

    def __init__(self, home: Path, cwd: Path) -> None:
        from jupyter_client.manager import start_new_kernel

        env = {**os.environ, "HF_MAGIC_HOME": str(home)}
        self.manager, self.client = start_new_kernel(kernel_name="python3", env=env, cwd=str(cwd), startup_timeout=180)

    def run(self, code: str, timeout: float = 900) -> str:
        """Run ``code`` to its end; what it printed (stdout and stderr) and displayed (as plain text)."""
        printed: list[str] = []

        def keep(message: dict[str, Any]) -> None:
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            elif message["msg_type"] in ("display_data", "execute_result"):
                printed.append(message["content"]["data"].get("text/plain", ""))

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=keep, allow_stdin=False)
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(printed)

    def start(self, code: str) -> str:
        """Send ``code`` without waiting; its message id."""
        return str(self.client.execute(code, allow_stdin=False))

    def wait_for_reply(self, msg_id: str, timeout: float = 900) -> dict[str, Any]:
        """The execute reply of the cell ``msg_id`` (replies of cells sent before it are passed over)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = dict(self.client.get_shell_msg(timeout=max(1.0, deadline - time.monotonic())))
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def wait_until_streaming(self, msg_id: str, updates: int = 3, timeout: float = 900) -> None:
        """Block until the cell ``msg_id`` has redrawn its streaming reply ``updates`` times: mid-reply."""
        seen, deadline = 0, time.monotonic() + timeout
        while seen < updates:
            message = self.client.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
            if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "update_display_data":
                seen += 1

    def kill(self) -> None:
        """SIGKILL, as the out-of-memory killer ends a kernel: no cleanup of any kind runs."""
        pid = self.manager.provisioner.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.manager.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self.manager.is_alive()

    def close(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=True)
        else:
            self.manager.cleanup_resources()


@pytest.fixture
def kernels(tmp_path: Path) -> Iterator[list[Kernel]]:
    started: list[Kernel] = []
    yield started
    for kernel in started:
        kernel.close()


def _open(kernels: list[Kernel], home: Path, cwd: Path) -> Kernel:
    kernel = Kernel(home, cwd)
    kernels.append(kernel)
    kernel.run("%load_ext hf_magic\n%config HfChatMagics.max_new_tokens = 24")
    return kernel


def test_a_killed_kernel_loses_only_the_reply_in_flight(kernels: list[Kernel], tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HF_MAGIC_HOME", str(home))
    first = _open(kernels, home, tmp_path)
    first.run('%%hfchat -s "You are a terse tutor."\nWhat does an axolotl eat? One sentence.')
    first.run("%%hfchat\nName one river in France.")
    interrupted = first.start("%%hfchat --max-new-tokens 400\nDescribe the Loire valley in detail.")
    first.wait_until_streaming(interrupted)
    first.manager.interrupt_kernel()  # a KeyboardInterrupt mid-reply: the partial reply is kept, marked
    first.wait_for_reply(interrupted)
    first.run("%%hfchat --temperature 0.7\nAnd one mountain?")
    first.run(DUMP.format(session="default", path=str(tmp_path / "before.json")))
    in_flight = first.start("%%hfchat --max-new-tokens 2000\nWrite a long story about a lighthouse keeper.")
    first.wait_until_streaming(in_flight)
    first.kill()

    before = json.loads((tmp_path / "before.json").read_text())
    assert len(before) == 4 and before[2]["interrupted"] and before[2]["reply"]
    second = _open(kernels, home, tmp_path)
    restored = second.run("%hfchat log restore --last")
    assert "restored 4 turns from the turn log" in restored
    second.run(DUMP.format(session="default", path=str(tmp_path / "after.json")))
    after = json.loads((tmp_path / "after.json").read_text())
    assert after == before  # every field of every finished turn, the interrupted one included
    endings = [entry.ended for entry in TurnLog(home / "logs.db").recent(4)]
    assert endings == ["finished", "finished", "interrupted", "finished"]
    found = second.run("%hfchat log search axolotl")
    assert "What does an axolotl eat?" in found
    database = sqlite3.connect(home / "logs.db")
    assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert database.execute("SELECT COUNT(*) FROM turns WHERE user LIKE '%lighthouse%'").fetchone()[0] == 0
    # The restored session goes on: its next turn follows the restored ones, with their system prompt.
    second.run("%%hfchat --max-new-tokens 8\nThanks!")
    second.run(DUMP.format(session="default", path=str(tmp_path / "later.json")))
    later = json.loads((tmp_path / "later.json").read_text())
    assert later[:4] == before and later[4]["system_prompt"] == "You are a terse tutor."


def test_two_kernels_logging_at_once_lose_and_mix_nothing(kernels: list[Kernel], tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HF_MAGIC_HOME", str(home))
    pair = [_open(kernels, home, tmp_path) for _ in range(2)]
    for index, kernel in enumerate(pair):
        kernel.run(f"%%hfchat --max-new-tokens 4\nKernel {index} says hello.")  # loads the model
    queued = [
        (kernel, kernel.start(f"%%hfchat --max-new-tokens 12\nKernel {index}, question {number}: name a colour."))
        for number in range(3)
        for index, kernel in enumerate(pair)
    ]
    for kernel, msg_id in queued:
        reply = kernel.wait_for_reply(msg_id)
        assert reply["content"]["status"] == "ok"
    dumps = []
    for index, kernel in enumerate(pair):
        kernel.run(DUMP.format(session="default", path=str(tmp_path / f"kernel{index}.json")))
        dumps.append(json.loads((tmp_path / f"kernel{index}.json").read_text()))
    store = TurnLog(home / "logs.db")
    assert store.count() == 8
    conversations = [summary.id for summary in store.conversations()]
    logged = sorted(([t.to_dict() for t in transcript_of(store.conversation(c))] for c in conversations), key=str)
    assert len(logged) == 2 and logged == sorted(dumps, key=str)
    for index, dump in enumerate(dumps):
        assert [turn["user"].split(",")[0] for turn in dump[1:]] == [f"Kernel {index}"] * 3


def test_a_damaged_log_is_one_line_and_the_kernel_chats_on(kernels: list[Kernel], tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "logs.db").write_bytes(b"not a database at all " * 200)
    kernel = _open(kernels, home, tmp_path)
    first = kernel.run("%%hfchat\nWhat is the capital of France?")
    second = kernel.run("%%hfchat\nAnd of Italy?")
    kernel.run(DUMP.format(session="default", path=str(tmp_path / "turns.json")))
    turns = json.loads((tmp_path / "turns.json").read_text())
    assert [turn["user"] for turn in turns] == ["What is the capital of France?", "And of Italy?"]
    assert all(turn["reply"].strip() for turn in turns)
    notes = [line for line in (first + second).splitlines() if "turn log" in line]
    assert len(notes) == 1 and "is damaged" in notes[0] and "logs.db.bad" in notes[0], first + second
