"""``%%hfchat --tools``, ``%hfchat tools`` and terminal approval in a real IPython shell, on a scripted model (the
real parsers); the same cells on the real default model are in test_tool_loop_model.py."""

from __future__ import annotations

import uuid

import pytest
from IPython.core.interactiveshell import InteractiveShell

from hf_magic.chat_models import ChatHuggingFace
from hf_magic.notebook.magics import HfChatMagics
from hf_magic.notebook.session import ChatSession, get_session
from tests.support.replay_backend import ScriptedBackend
from tests.support.tool_functions import ADD_SOURCE, TOUCH_SOURCE
from tests.support.tool_functions import tool_call_reply as call_text


@pytest.fixture(scope="module")
def ip(hf_shell: InteractiveShell) -> InteractiveShell:
    hf_shell.run_cell(ADD_SOURCE + TOUCH_SOURCE)
    return hf_shell


@pytest.fixture
def magics(ip: InteractiveShell) -> HfChatMagics:
    instance = ip.magics_manager.registry["HfChatMagics"]
    saved = {name: getattr(instance, name) for name in ("display_mode", "tools")}
    instance.display_mode = "terminal"
    yield instance
    for name, value in saved.items():
        setattr(instance, name, value)


def scripted(replies: list[str]) -> tuple[ChatSession, ScriptedBackend]:
    backend = ScriptedBackend(replies)
    session = get_session(f"tools-{uuid.uuid4().hex[:8]}")
    session.use_model(ChatHuggingFace(llm=backend))
    return session, backend


def test_a_cell_with_tools_runs_the_loop_and_prints_each_call(ip, magics, capsys) -> None:
    session, backend = scripted([call_text("add", a=20, b=22), "It is 42."])
    ip.run_cell_magic("hfchat", f"--session {session.name} --tools add --tool-choice required -o answer", "20+22?")
    out = capsys.readouterr().out
    assert '[tool] add {"a": 20, "b": 22} -> ✓' in out and "\n  42\n" in out and "It is 42." in out
    assert backend.requests[0].tool_choice == "required" and backend.requests[0].tools[0]["function"]["name"] == "add"
    assert ip.user_ns["answer"].response_metadata["tool_steps"][0]["calls"][0]["result"] == "42"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--tools nosuch", "No function 'nosuch' in the notebook"),
        ("--tools ADD", "No function 'ADD' in the notebook"),
        ("--tools touched", "'touched' is a list, not a function"),
        ("--tool-choice required", "--tool-choice and --max-steps need tools"),
        ("--tools add --tool-choice subtract", "tool_choice 'subtract' is not a bound tool"),
        ("--tools add --max-steps 0", "--max-steps must be 1 or more"),
    ],
)
def test_a_bad_tool_option_is_one_line_and_nothing_is_sent(ip, magics, capsys, line: str, message: str) -> None:
    session, backend = scripted(["unused"])
    ip.run_cell_magic("hfchat", f"--session {session.name} {line}", "Go")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0]
    assert backend.requests == [] and session.turns == []


def test_tools_add_list_remove_keep_the_sessions_tools(ip, magics, capsys) -> None:
    session, backend = scripted([call_text("add", a=1, b=2), "3"])
    ip.run_line_magic("hfchat", f"tools add add,notebook --session {session.name}")
    ip.run_line_magic("hfchat", f"tools list --session {session.name}")
    out = capsys.readouterr().out
    assert "tools: add, notebook" in out and "run_code (asks first)" in out
    ip.run_cell_magic("hfchat", f"--session {session.name}", "1+2?")  # no --tools: the session's own
    names = [tool["function"]["name"] for tool in backend.requests[0].tools]
    assert names == ["add", "list_variables", "describe_variable", "read_cell", "run_code"]
    ip.run_line_magic("hfchat", f"tools remove notebook --session {session.name}")
    ip.run_line_magic("hfchat", f"tools remove nosuch --session {session.name}")
    captured = capsys.readouterr()
    assert "tools: add" in captured.out and "Not a tool of session" in captured.err


def test_config_gives_new_sessions_their_tools(ip, magics) -> None:
    ip.run_line_magic("config", "HfChatMagics.tools = ['add']")
    session, backend = scripted([call_text("add", a=1, b=1), "2"])
    ip.run_cell_magic("hfchat", f"--session {session.name}", "1+1?")
    assert [tool["function"]["name"] for tool in backend.requests[0].tools] == ["add"]


def test_the_terminal_asks_with_input_and_always_stops_asking(ip, magics, monkeypatch, capsys) -> None:
    answers = iter(["maybe", "s", "a"])
    prompts: list[str] = []

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("builtins.input", answer)
    ip.user_ns["touched"].clear()
    session, backend = scripted([call_text("touch", note="one"), "skipped", call_text("touch", note="two"), "done"])
    ip.run_line_magic("hfchat", f"tools add touch --approve --session {session.name}")
    ip.run_cell_magic("hfchat", f"--session {session.name}", "Record one.")  # "maybe" asks again, "s" skips
    assert ip.user_ns["touched"] == [] and session.turns[-1].steps[0].calls[0].status == "declined"
    ip.run_cell_magic("hfchat", f"--session {session.name}", "Record two.")  # "a": runs, and never asks again
    assert ip.user_ns["touched"] == ["two"] and len(prompts) == 3
    backend.replies += [call_text("touch", note="three"), "done"]
    ip.run_cell_magic("hfchat", f"--session {session.name}", "Record three.")
    assert ip.user_ns["touched"] == ["two", "three"] and len(prompts) == 3
    assert "The model wants to run touch:" in capsys.readouterr().out


def test_tools_allow_says_always_ahead_so_nothing_asks(ip, magics, monkeypatch) -> None:
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked although allowed"))
    ip.user_ns["touched"].clear()
    session, _ = scripted([call_text("touch", note="unattended"), "done"])
    ip.run_line_magic("hfchat", f"tools add touch --approve --session {session.name}")
    ip.run_line_magic("hfchat", f"tools allow touch --session {session.name}")
    ip.run_cell_magic("hfchat", f"--session {session.name}", "Record.")
    assert ip.user_ns["touched"] == ["unattended"]
