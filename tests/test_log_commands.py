"""``%hfchat log ...`` in a real IPython shell, and the panel's Past conversations, over sessions that chat with a
local scripted endpoint (a real HTTP server): table, search, show, restore, export, forget, off/on, faults."""

from __future__ import annotations

import json
import uuid

import pytest
from IPython.core.interactiveshell import InteractiveShell

from hf_magic import ChatPanel
from hf_magic.notebook.kernel_log import kernel_log
from hf_magic.notebook.magics import HfChatMagics
from hf_magic.notebook.session import ChatSession, get_session
from hf_magic.notebook.turn_log import TurnLog
from tests.support.log_files import say


@pytest.fixture(scope="module")
def ip() -> InteractiveShell:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hf_magic")
    return shell


@pytest.fixture
def magics(ip: InteractiveShell) -> HfChatMagics:
    instance = ip.magics_manager.registry["HfChatMagics"]
    yield instance
    instance.log = True


def _name() -> str:
    return f"log-{uuid.uuid4().hex[:8]}"


def _chat(ip: InteractiveShell, recorder, name: str, *texts: str) -> None:
    for text in texts:
        say(recorder, f"Reply to {text}")
        ip.run_cell_magic("hfchat", f"--session {name} --endpoint-url {recorder.url} --no-stream", text)


def test_table_search_and_show(ip, recorder, log_home, capsys) -> None:
    name = _name()
    _chat(ip, recorder, name, "What is the capital of France?", "And of Spain?")
    capsys.readouterr()
    ip.run_line_magic("hfchat", "log 5")
    table = capsys.readouterr().out
    assert str(log_home / "logs.db") in table and "logging on" in table
    assert "What is the capital of France?" in table and "Reply to And of Spain?" in table and name in table
    ip.run_line_magic("hfchat", "log search capital")
    found = capsys.readouterr().out
    assert "1 logged turns with 'capital'" in found and "And of Spain" not in found
    entry = TurnLog().search("capital")[0]
    ip.run_line_magic("hfchat", f"log show {entry.id}")
    shown = capsys.readouterr().out
    assert "finished" in shown and "(endpoint)" in shown and "Reply to What is the capital of France?" in shown
    ip.run_line_magic("hfchat", "log events")
    assert "Last 0 logged runs" in capsys.readouterr().out


def test_export_from_the_log_matches_the_sessions_own_export(ip, recorder, log_home, tmp_path, capsys) -> None:
    name = _name()
    say(recorder, "Hi")
    ip.run_cell_magic("hfchat", f"--session {name} --endpoint-url {recorder.url} -s 'Be brief.'", "Warm-up")
    _chat(ip, recorder, name, "One", "Two")
    ip.run_line_magic("hfchat", f"export {tmp_path / 'live.json'} --session {name}")
    ip.run_line_magic("hfchat", f"log export {tmp_path / 'logged.json'} --session {name}")
    assert "Exported 3 logged turns" in capsys.readouterr().out
    live, logged = (json.loads((tmp_path / f"{kind}.json").read_text()) for kind in ("live", "logged"))
    assert logged["turns"] == live["turns"] and logged["messages"] == live["messages"]
    assert logged["messages"][0] == {"role": "system", "content": "Be brief."}


def test_restore_by_id_or_last_rebuilds_the_session_field_for_field(ip, recorder, log_home, capsys) -> None:
    name, other = _name(), _name()
    _chat(ip, recorder, name, "First", "Second", "Third")
    original = [turn.to_dict() for turn in get_session(name).turns]
    ip.run_line_magic("hfchat", f"log restore --last --session {name}")  # the same session: in place
    assert [turn.to_dict() for turn in get_session(name).turns] == original
    second = TurnLog().search("Second")[0].id
    ip.run_line_magic("hfchat", f"log restore {second} --session {other}")  # up to that turn, into another
    out = capsys.readouterr().out
    assert f"Session {other!r}: restored 2 turns from the turn log" in out
    assert [turn.to_dict() for turn in get_session(other).turns] == original[:2]
    assert get_session(other).spec.endpoint_url == recorder.url  # it goes on with the model it had
    _chat(ip, recorder, other, "Fourth")
    ip.run_line_magic("hfchat", f"log restore --last --session {other}")
    assert [t.user for t in get_session(other).turns] == ["First", "Second", "Fourth"]


def test_forget_a_turn_a_session_or_everything(ip, recorder, log_home, capsys) -> None:
    name, other = _name(), _name()
    _chat(ip, recorder, name, "Keep me", "Forget me")
    _chat(ip, recorder, other, "Other session")
    target = TurnLog().search("Forget")[0].id
    ip.run_line_magic("hfchat", f"log forget {target}")
    assert [e.turn.user for e in TurnLog().recent()] == ["Keep me", "Other session"]
    ip.run_line_magic("hfchat", f"log forget --session {name}")
    assert [e.turn.user for e in TurnLog().recent()] == ["Other session"]
    ip.run_line_magic("hfchat", "log forget --all")
    out = capsys.readouterr().out
    assert "Forgot 1 logged turn(s) (with any copies" in out and "Forgot every logged turn (1)" in out
    assert TurnLog().count() == 0


def test_off_on_config_and_environment_switches(ip, magics, recorder, log_home, monkeypatch, capsys) -> None:
    name = _name()
    ip.run_line_magic("hfchat", "log off")
    _chat(ip, recorder, name, "Not logged (off)")
    ip.run_line_magic("hfchat", "log on")
    _chat(ip, recorder, name, "Logged")
    ip.run_line_magic("config", "HfChatMagics.log = False")
    _chat(ip, recorder, name, "Not logged (config)")
    ip.run_line_magic("config", "HfChatMagics.log = True")
    monkeypatch.setenv("HF_MAGIC_NO_LOG", "1")
    ip.run_line_magic("hfchat", "log on")
    _chat(ip, recorder, name, "Not logged (environment)")
    out = capsys.readouterr().out
    assert "Turn log off for this kernel" in out and "HF_MAGIC_NO_LOG is set" in out
    assert [e.turn.user for e in TurnLog().recent()] == ["Logged"]
    assert len(get_session(name).turns) == 4


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("log show abc", "needs a turn id"),
        ("log show 99999", "No logged turn 99999"),
        ("log restore 99999", "No logged turn 99999"),
        ("log search", "needs words to look for"),
        ("log frobnicate", "Unknown %hfchat log action 'frobnicate'"),
        ("log export", "needs a file path first"),
        ("log forget some words", "takes turn ids"),
        ("log restore --session nobody-logged-this", "holds no conversation of session 'nobody-logged-this'"),
    ],
)
def test_bad_log_lines_are_one_line_each(ip, log_home, capsys, line, expected) -> None:
    ip.run_line_magic("hfchat", line)
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_corrupt_log_is_one_line_for_the_commands_and_the_chat(ip, recorder, log_home, capsys) -> None:
    log_home.mkdir(parents=True)
    (log_home / "logs.db").write_bytes(b"garbage " * 64)
    kernel_log().store()  # (re)open at this test's path
    name = _name()
    _chat(ip, recorder, name, "Still chatting")
    ip.run_line_magic("hfchat", "log")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all("is damaged" in line for line in lines), err  # the chat's note, the command's error
    assert get_session(name).turns[-1].reply == "Reply to Still chatting"
    (log_home / "logs.db").unlink()
    _chat(ip, recorder, name, "Again")
    assert [e.turn.user for e in TurnLog().recent()] == ["Still chatting", "Again"]


# ---------------------------------------------------------------------------------- the panel
def test_the_panel_lists_and_opens_a_past_conversation(recorder, log_home) -> None:
    from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
    from hf_magic.notebook.model_spec import ModelSpec

    first = ChatPanel(ChatSession("panel-log"))
    spec = ModelSpec(model="served-model", backend="endpoint", endpoint_url=recorder.url)
    first.session.use_model(ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=recorder.url)), spec)
    for text in ("Hello panel", "Second message"):
        say(recorder, f"Re {text}")
        first.send(text)
        assert first.wait(60)
    second = ChatPanel(ChatSession("panel-log"))
    try:
        assert second.past.picker.options == ()
        second.settings.selected_index = 2  # opening the section reads the log
        labels = [label for label, _ in second.past.picker.options]
        assert len(labels) == 1 and "2 turns" in labels[0] and "Hello panel" in labels[0]
        second.past.open_button.click()
        assert [t.to_dict() for t in second.session.turns] == [t.to_dict() for t in first.session.turns]
        assert "Re Second message" in "".join(child.value for child in second.transcript.children)
        assert "Opened a conversation of 2 turns" in second.note.value and second.error.value == ""
    finally:
        first.close()
        second.close()
