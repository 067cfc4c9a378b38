"""The turn log: each turn of a real session (on a local scripted endpoint) written to SQLite as it ends, read back
field for field, searched, restored, forgotten; two processes writing at once; every fault one line, chat going on.
The real-model and real-kernel checks are in test_turn_log_kernels.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
from hf_magic.backend import Usage
from hf_magic.errors import TurnLogError
from hf_magic.notebook import turn_log as turn_log_module
from hf_magic.notebook.kernel_log import KernelLog
from hf_magic.notebook.model_spec import ModelSpec
from hf_magic.notebook.session import ChatSession
from hf_magic.notebook.turn_log import SCHEMA_VERSION, TurnLog
from hf_magic.notebook.turn_records import image_reference, transcript_of
from hf_magic.notebook.turns import SessionEvent, ToolCall, ToolStep, Turn
from tests.support.http_recorder import Reply, chunk
from tests.support.log_files import every_byte, say

ROOT = Path(__file__).resolve().parent.parent


class Heard:
    """A fresh KernelLog for one test, and the lines it said."""

    def __init__(self) -> None:
        self.log = KernelLog()
        self.lines: list[str] = []
        self.log.notify = self.lines.append


@pytest.fixture
def heard(log_home: Path) -> Heard:
    return Heard()


@pytest.fixture
def chat(recorder, heard: Heard) -> ChatSession:
    """A session on the local scripted endpoint, followed by the test's log."""
    session = ChatSession("log-unit")
    spec = ModelSpec(model="served-model", backend="endpoint", endpoint_url=recorder.url)
    session.use_model(ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=recorder.url)), spec)
    heard.log.follow(session)
    return session


def _rich_turn(tmp_path: Path) -> Turn:
    """A turn with every kind of field: tool steps, thinking, usage with reasoning, timings and three images."""
    from hf_magic.notebook.cell_images import option_images

    picture = tmp_path / "square.png"
    from PIL import Image

    Image.new("RGB", (4, 4), "red").save(picture)
    images = option_images([str(picture), "https://example.com/cat.png"])
    images.append({"type": "image", "base64": images[0]["base64"], "mime_type": "image/png"})  # pixels, no file
    call = ToolCall(name="weather", args={"city": "Paris"}, id="call-1", result="18 C", status="ok", duration=0.25)
    return Turn(
        user="What is the weather in Paris?",
        reply="It is 18 C.",
        reasoning="I should call the weather tool.",
        model="served-model",
        system_prompt="Be brief.",
        usage=Usage(40, 12, 5),
        finish_reason="stop",
        key="cell:abc",
        time_to_first_token=0.12,
        duration=1.5,
        images=images,
        steps=[ToolStep(text="Let me check.", reasoning="Need data.", calls=[call])],
    )


# ------------------------------------------------------------------------------ recording
def test_every_field_of_a_turn_comes_back(heard: Heard, tmp_path: Path) -> None:
    session = ChatSession("fields")
    heard.log.follow(session)
    turn = _rich_turn(tmp_path)
    session.turns.append(turn)
    session.emit(SessionEvent("turn_finished", turn=turn))
    entry = heard.log.store().recent(1)[0]
    back, original = entry.turn.to_dict(), turn.to_dict()
    assert {k: v for k, v in back.items() if k != "images"} == {k: v for k, v in original.items() if k != "images"}
    # The file and the URL come back; pixels that were never a file cannot (the log keeps no pixels).
    assert back["images"] == original["images"][:2] and entry.images_left_out == 1
    assert entry.turn.images[0] == turn.images[0]
    assert (entry.session, entry.ended, entry.kernel, entry.turn.key) == (
        "fields",
        "finished",
        heard.log.kernel,
        "cell:abc",
    )
    assert "weather" in entry.turn.steps[0].calls[0].name and heard.lines == []


def test_images_are_references_and_hashes_never_pixels(heard: Heard, tmp_path: Path) -> None:
    session = ChatSession("pixels")
    heard.log.follow(session)
    turn = _rich_turn(tmp_path)
    session.emit(SessionEvent("turn_finished", turn=turn))
    data = every_byte(heard.log.store().path)
    assert turn.images[0]["base64"].encode() not in data
    reference = image_reference(turn.images[2])
    assert set(reference) == {"type", "sha256", "bytes", "mime_type"} and reference["bytes"] > 0
    (tmp_path / "square.png").write_bytes(b"not the same picture")
    again = heard.log.store().recent(1)[0]
    assert again.images_left_out == 2  # the file changed since: its pixels are not what the model saw


def test_a_real_exchange_is_logged_with_model_backend_settings_and_usage(chat: ChatSession, recorder) -> None:
    say(recorder, "Paris.")
    chat.settings.temperature = 0.3
    turn = chat.send("What is the capital of France?", key="cell:1")
    entry = chat_log(chat).recent(1)[0]
    assert entry.turn.to_dict() == turn.to_dict()
    assert (entry.backend, entry.spec["endpoint_url"], entry.settings["temperature"]) == ("endpoint", recorder.url, 0.3)
    assert entry.turn.usage == Usage(5, 2) and entry.ended == "finished"


def chat_log(session: ChatSession) -> TurnLog:
    return TurnLog()  # the file at HF_MAGIC_HOME, read as another kernel would


def test_stop_interrupt_and_error_are_logged_with_how_they_ended(chat: ChatSession, recorder) -> None:
    from tests.support.held_reply import HeldReply

    recorder.replies.append(Reply(events=[chunk(f"word{i} ") for i in range(50)], event_delay=0.05))
    held = HeldReply(chat, "Tell me a long story.")
    chat.stop()
    held.release()
    recorder.replies.append(Reply(status=400, body={"error": "bad request: too long"}))
    with pytest.raises(Exception, match="400"):
        chat.send("This one fails.")
    # A KeyboardInterrupt ends a reply the same way Stop does, but nobody pressed Stop.
    interrupted = Turn(user="Interrupted", reply="Half", interrupted=True, finish_reason="interrupted")
    chat.emit(SessionEvent("turn_started", turn=interrupted))
    chat.emit(SessionEvent("turn_finished", turn=interrupted))
    entries = chat_log(chat).recent(3)
    assert [entry.ended for entry in entries] == ["stopped", "error", "interrupted"]
    assert entries[0].turn.interrupted and entries[0].turn.reply.startswith("word0")
    assert "400" in (entries[1].error or "") and entries[1].turn.user == "This one fails."


def test_reset_starts_a_new_conversation_and_a_rerun_cell_replaces_its_turn(chat: ChatSession, recorder) -> None:
    for text, key in (("One", "cell:a"), ("Two", "cell:b"), ("One again", "cell:a")):
        say(recorder, f"Reply to {text}")
        chat.send(text, key=key)
    first = [(t.user, t.reply) for t in chat.turns]
    chat.reset()
    say(recorder, "Fresh")
    chat.send("Three", key="cell:c")
    store = chat_log(chat)
    conversations = [summary.id for summary in store.conversations()]
    assert len(conversations) == 2
    older = transcript_of(store.conversation(conversations[1]))
    assert [(t.user, t.reply) for t in older] == first == [("One again", "Reply to One again"), ("Two", "Reply to Two")]


def test_restore_brings_back_the_session_and_logs_it_again_pointing_at_the_originals(chat, recorder, heard) -> None:
    for text in ("Alpha", "Beta"):
        say(recorder, f"Re {text}")
        chat.send(text)
    chat.settings.system_prompt = "Answer in French."
    say(recorder, "Gamma!")
    chat.send("Gamma")
    store = chat_log(chat)
    entries = store.conversation(store.last_conversation("log-unit") or "")
    fresh = ChatSession("log-unit")
    heard.log.follow(fresh)
    turns = heard.log.restore(fresh, entries)
    assert [t.to_dict() for t in fresh.turns] == [t.to_dict() for t in chat.turns] == [t.to_dict() for t in turns]
    assert fresh.settings.system_prompt == "Answer in French." and fresh.spec.endpoint_url == recorder.url
    # The restored turns open the new conversation (a crash now loses nothing), shown once in listings.
    assert store.count() == 6 and len(store.recent(50)) == 3
    copies = store.conversation(store.last_conversation("log-unit") or "")
    assert [c.origin for c in copies] == [e.id for e in entries] and all(c.carried for c in copies)
    # Forgetting a turn forgets the copies a restore made of it.
    assert store.forget(ids=[entries[0].id]) == 2 and not store.search("Alpha")


# --------------------------------------------------------------------------------- search
def test_full_text_search_finds_a_word_from_an_old_turn(heard: Heard) -> None:
    session = ChatSession("search")
    heard.log.follow(session)
    session.emit(SessionEvent("turn_finished", turn=Turn(user="Tell me about axolotls", reply="They regrow limbs.")))
    for index in range(300):
        session.emit(SessionEvent("turn_finished", turn=Turn(user=f"Question {index}", reply=f"Answer {index}")))
    step = ToolStep(calls=[ToolCall(name="lookup", args={"q": "zeppelin"}, result="airship", status="ok")])
    session.emit(SessionEvent("turn_finished", turn=Turn(user="Tools", reply="done", steps=[step])))
    store = heard.log.store()
    assert [entry.turn.user for entry in store.search("axolotls")] == ["Tell me about axolotls"]
    assert [entry.turn.user for entry in store.search("regrow")] == ["Tell me about axolotls"]
    assert [entry.turn.user for entry in store.search("zeppelin airship")] == ["Tools"]
    assert store.search("axolotls zeppelin") == []
    for query in ('AND OR "', "NEAR(", "col:umn *", "'"):  # FTS5 syntax in what a user types is just text
        assert store.search(query) == []


# ---------------------------------------------------------------------------- concurrency
WRITER = textwrap.dedent(
    """
    import sys
    from hf_magic.notebook.kernel_log import KernelLog
    from hf_magic.notebook.session import ChatSession
    from hf_magic.notebook.turns import SessionEvent, Turn

    name, count = sys.argv[1], int(sys.argv[2])
    log = KernelLog()
    log.notify = lambda line: print(line, file=sys.stderr)
    session = ChatSession(name)
    log.follow(session)
    print("ready", flush=True)
    sys.stdin.readline()  # both writers start together
    for index in range(count):
        turn = Turn(user=f"{name} asks {index}", reply=f"{name} answers {index} " + "x" * 2000, key=f"cell:{index}")
        session.emit(SessionEvent("turn_finished", turn=turn))
    """
)


def test_two_processes_writing_at_once_lose_and_interleave_nothing(log_home: Path) -> None:
    count = 150
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for name in ("left", "right")
    ]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    errors = [writer.communicate(timeout=300)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0] and errors == ["", ""]
    store = TurnLog()
    assert store.count() == 2 * count
    for name in ("left", "right"):
        entries = store.conversation(store.last_conversation(name) or "")
        assert [e.turn.user for e in entries] == [f"{name} asks {i}" for i in range(count)]
        assert all(e.turn.reply.startswith(f"{name} answers {i} ") for i, e in enumerate(entries))
        assert all(len(e.turn.reply) == len(f"{name} answers {i} ") + 2000 for i, e in enumerate(entries))
    both = TurnLog().recent(2 * count)
    assert len({entry.id for entry in both}) == 2 * count
    assert sqlite3.connect(store.path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --------------------------------------------------------------------------------- faults
def test_a_corrupt_file_is_one_line_and_chat_goes_on(chat: ChatSession, recorder, heard: Heard, log_home: Path) -> None:
    log_home.mkdir(parents=True)
    (log_home / "logs.db").write_bytes(b"this is not a database " * 100)
    for text in ("First", "Second"):
        say(recorder, f"Re {text}")
        chat.send(text)
    assert [t.reply for t in chat.turns] == ["Re First", "Re Second"]
    assert len(heard.lines) == 1 and "damaged" in heard.lines[0] and "\n" not in heard.lines[0]
    (log_home / "logs.db").rename(log_home / "logs.db.bad")
    say(recorder, "Re Third")
    chat.send("Third")
    assert "works again" in heard.lines[-1] and "2 turn(s) held" in heard.lines[-1]
    assert [e.turn.user for e in TurnLog().recent(5)] == ["First", "Second", "Third"]


def test_a_locked_file_is_one_line_and_the_turn_waits_for_the_next_write(chat, recorder, heard: Heard) -> None:
    say(recorder, "Before")
    chat.send("Before")  # creates the file
    holder = sqlite3.connect(heard.log.store().path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the lock
    for text in ("While locked", "Still locked"):
        say(recorder, text)
        assert chat.send(text).reply == text
    assert len(heard.lines) == 1 and "locked by another program" in heard.lines[0]  # said once
    holder.execute("ROLLBACK")
    holder.close()
    say(recorder, "After")
    chat.send("After")
    assert "works again: 2 turn(s) held" in heard.lines[-1]
    assert [e.turn.user for e in TurnLog().recent(5)] == ["Before", "While locked", "Still locked", "After"]


def test_a_full_disk_is_one_line_and_chat_goes_on(chat, recorder, heard: Heard) -> None:
    say(recorder, "Fits")
    chat.send("Fits")
    # SQLite's own size cap: a write past it fails with SQLITE_FULL, the error a full disk gives.
    connection = heard.log.store()._open()
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    say(recorder, "Does not fit")
    turn = chat.send("Does not fit " + "y" * 20000)
    assert turn.reply == "Does not fit" and len(heard.lines) == 1 and "full" in heard.lines[0]
    assert [e.turn.user for e in TurnLog().recent(5)] == ["Fits"]


def test_a_file_from_a_newer_hf_magic_is_one_line_and_left_untouched(chat, recorder, heard: Heard, log_home) -> None:
    log_home.mkdir(parents=True)
    newer = sqlite3.connect(log_home / "logs.db")
    newer.execute("CREATE TABLE future (x)")
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    newer.commit()
    newer.close()
    say(recorder, "Hello")
    assert chat.send("Hi").reply == "Hello"
    assert len(heard.lines) == 1 and "newer hf_magic" in heard.lines[0] and "upgrade" in heard.lines[0]
    check = sqlite3.connect(log_home / "logs.db")
    tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    assert tables == {"future"} and check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 5
    with pytest.raises(TurnLogError, match="newer hf_magic"):
        TurnLog().recent()


READ_ONLY = textwrap.dedent(
    """
    import os, sys
    import huggingface_hub, hf_magic.notebook.restore
    from hf_magic.notebook.kernel_log import KernelLog
    from hf_magic.notebook.session import ChatSession
    from hf_magic.notebook.turns import SessionEvent, Turn
    if os.geteuid() == 0:  # root writes any file: go on as a user who cannot (once Python's files are loaded)
        os.setgid(65534); os.setuid(65534)
    log = KernelLog()
    lines = []
    log.notify = lines.append
    session = ChatSession("ro")
    log.follow(session)
    for text in ("one", "two"):
        session.emit(SessionEvent("turn_finished", turn=Turn(user=text, reply=text)))
    print("\\n".join(lines))
    """
)


def test_a_read_only_file_is_one_line(log_home: Path, tmp_path: Path) -> None:
    store = TurnLog()
    store.write([_row("before")])  # creates the file
    store.close()
    for path in (log_home / "logs.db", log_home / "logs.db-wal", log_home / "logs.db-shm"):
        if path.exists():
            path.chmod(0o444)
    tmp_path.chmod(0o755)
    log_home.chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, "-c", READ_ONLY], capture_output=True, text=True, cwd=ROOT, env={**os.environ}, timeout=120
        )
    finally:
        log_home.chmod(0o755)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stderr
    assert len(lines) == 1 and "cannot be written" in lines[0] and "HF_MAGIC_HOME" in lines[0], lines


def test_an_older_file_is_migrated_keeping_its_turns(log_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TurnLog()
    store.write([_row("kept")])
    store.close()
    step = ("ALTER TABLE turns ADD COLUMN rating INTEGER",)
    monkeypatch.setitem(turn_log_module.MIGRATIONS, SCHEMA_VERSION + 1, step)
    monkeypatch.setattr(turn_log_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    migrated = TurnLog()
    assert [entry.turn.user for entry in migrated.recent()] == ["kept"]
    check = sqlite3.connect(log_home / "logs.db")
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert "rating" in [row[1] for row in check.execute("PRAGMA table_info(turns)")]


def _row(text: str) -> dict[str, object]:
    from hf_magic.notebook.turn_records import row_values

    return row_values(
        Turn(user=text, reply=text), conversation="c", session="s", kernel="k", ended="finished", logged_at=0.0
    )


# ----------------------------------------------------------------------------- forgetting
def test_forget_leaves_no_trace_of_the_words_in_the_files(heard: Heard) -> None:
    session = ChatSession("secret-session")
    heard.log.follow(session)
    session.emit(SessionEvent("turn_finished", turn=Turn(user="my password is swordfish", reply="noted")))
    session.emit(SessionEvent("turn_finished", turn=Turn(user="keep this", reply="kept")))
    store = heard.log.store()
    assert b"swordfish" in every_byte(store.path)
    target = store.search("swordfish")[0].id
    assert store.forget(ids=[target]) == 1
    assert store.search("swordfish") == [] and b"swordfish" not in every_byte(store.path)
    assert [e.turn.user for e in store.recent()] == ["keep this"]
    assert store.forget(session="secret-session") == 1 and store.count() == 0


def test_switched_off_or_no_log_env_writes_nothing(heard: Heard, monkeypatch: pytest.MonkeyPatch) -> None:
    session = ChatSession("quiet")
    heard.log.follow(session)
    heard.log.switched_on = False
    session.emit(SessionEvent("turn_finished", turn=Turn(user="off", reply="off")))
    heard.log.switched_on = True
    monkeypatch.setenv("HF_MAGIC_NO_LOG", "1")
    session.emit(SessionEvent("turn_finished", turn=Turn(user="env", reply="env")))
    assert heard.log.store().recent() == [] and heard.log.store().forget(everything=True) == 0
    assert not heard.log.store().path.exists()  # nothing written, and reading made no file either
    monkeypatch.delenv("HF_MAGIC_NO_LOG")
    session.emit(SessionEvent("turn_finished", turn=Turn(user="on", reply="on")))
    assert [e.turn.user for e in heard.log.store().recent()] == ["on"]


def test_writes_from_two_threads_of_one_kernel_do_not_collide(heard: Heard) -> None:
    sessions = [ChatSession(f"thread-{i}") for i in range(2)]
    for session in sessions:
        heard.log.follow(session)

    def chat(session: ChatSession) -> None:
        for index in range(100):
            session.emit(SessionEvent("turn_finished", turn=Turn(user=f"{session.name} {index}", reply="r")))

    threads = [threading.Thread(target=chat, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = heard.log.store()
    assert store.count() == 200 and heard.lines == []
    for session in sessions:
        users = [e.turn.user for e in store.conversation(store.last_conversation(session.name) or "")]
        assert users == [f"{session.name} {i}" for i in range(100)]


def test_the_default_file_is_under_the_users_data_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hf_magic import config

    monkeypatch.delenv("HF_MAGIC_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    if sys.platform.startswith("linux"):
        assert config.log_path() == tmp_path / "data" / "hf_magic" / "logs.db"
    monkeypatch.setenv("HF_MAGIC_HOME", str(tmp_path / "mine"))
    assert config.log_path() == tmp_path / "mine" / "logs.db"


def test_a_record_is_json_with_the_spec_and_settings(heard: Heard) -> None:
    session = ChatSession("json", spec=ModelSpec(model="default", dtype="float32"))
    heard.log.follow(session)
    session.emit(SessionEvent("turn_finished", turn=Turn(user="q", reply="a")))
    record = json.loads(sqlite3.connect(heard.log.store().path).execute("SELECT record FROM turns").fetchone()[0])
    assert record["spec"]["dtype"] == "float32" and record["settings"]["max_new_tokens"] is not None
    assert "user" not in record and "reply" not in record  # the text lives in its own columns, once


def test_a_capabilitys_event_is_logged_as_it_carried_it(heard: Heard, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    monkeypatch.setenv("HF_TOKEN", "hf_eventSECRETtoken0006")
    session = ChatSession("mapper")
    heard.log.follow(session)
    # What a prompt over a table reports when it ends (branch h25: "map_finished", its template and its summary).
    detail = {"model": "m", "template": "Classify {text}", "rows": 3, "failed": 0, "note": "hf_eventSECRETtoken0006"}
    session.emit(SimpleNamespace(kind="map_finished", text="Classify {text}", detail=detail, turn=None, error=None))
    session.emit(SessionEvent("token", text="not a record"))
    events = heard.log.store().recent_events()
    assert [(e.kind, e.text, e.session) for e in events] == [("map_finished", "Classify {text}", "mapper")]
    assert events[0].detail == {**detail, "note": "***"}
    assert heard.log.store().forget(session="mapper") == 0 and heard.log.store().recent_events() == []


def test_a_failed_first_reply_is_logged_with_the_model_it_was_sent_to(chat: ChatSession, recorder) -> None:
    import socket

    from hf_magic.errors import HfMagicError

    say(recorder, "ok")
    chat.send("works")
    with socket.socket() as closed:  # bound, never listening: a connection is refused at once
        closed.bind(("127.0.0.1", 0))
        bad = ModelSpec(backend="endpoint", endpoint_url=f"http://127.0.0.1:{closed.getsockname()[1]}")
        with pytest.raises(HfMagicError):
            chat.send("fails", spec=bad)
    entry = chat_log(chat).recent(1)[0]
    assert (entry.ended, entry.turn.user, entry.spec["endpoint_url"]) == ("error", "fails", bad.endpoint_url)
    assert chat.spec.endpoint_url == recorder.url  # the session went back to the model it had
