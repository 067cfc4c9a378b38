"""Approval in a real kernel: the cell shows Run / Skip / Always this session while it runs, the kernel handles the
clicks (widget messages) during the cell, cells sent meanwhile run after it in order, an interrupt ends the wait and a
hanging tool; the session is intact after each. The model is scripted here (what it asks for is fixed); the browser
test (test_tools_e2e.py) clicks the same buttons with the real model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hf_magic.notebook.approval import ApprovalRecord, ask_with_input, call_preview
from hf_magic.notebook.turns import ToolCall
from tests.support.kernel import Kernel, running_kernel

pytestmark = pytest.mark.integration

SETUP = '''
import json, time
from hf_magic.chat_models import ChatHuggingFace
from hf_magic.notebook.session import get_session
from tests.support.replay_backend import ScriptedBackend
from tests.support.tool_functions import TOUCH_SOURCE

exec(TOUCH_SOURCE)  # touch(note) appends to touched

def hang() -> str:
    """Takes forever."""
    print("hang started", flush=True)
    time.sleep(600)
    return "never"

def call(name, **args):
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"

backend = ScriptedBackend([])

def fresh(name):
    """A session of its own on the scripted model, whose touch tool asks first (no "Always" from another test)."""
    get_session(name).use_model(ChatHuggingFace(llm=backend))
    get_ipython().run_line_magic("hfchat", f"tools add touch --approve --session {name}")

%load_ext hf_magic
'''


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    with running_kernel(tmp_path_factory.mktemp("kernel")) as started:
        started.run(SETUP)
        yield started


def value(kernel: Kernel, expression: str) -> Any:
    reply_id = kernel.submit(f"print(json.dumps({expression}))")
    kernel.wait_reply(reply_id)
    text = "".join(m["content"]["text"] for m in kernel.outputs(reply_id) if m["msg_type"] == "stream")
    return json.loads(text)


def script(kernel: Kernel, session: str, *replies: str) -> None:
    """The replies the model gives next, in a session of its own (``--session`` in the cells)."""
    kernel.run(f"backend.replies[:] = [{', '.join(replies)}]; backend.requests.clear(); touched.clear()")
    kernel.run(f"fresh({session!r})")


def test_run_is_clicked_while_the_cell_waits_and_a_cell_sent_meanwhile_runs_after(kernel: Kernel) -> None:
    script(kernel, "run", "call('touch', note='first')", "'Done.'")
    start = len(kernel.messages)
    cell = kernel.submit("%%hfchat --session run\nRecord a note.")
    run = kernel.button("Run", after=start)
    queued = kernel.submit("touched.append('queued')")  # waits in the kernel's queue while the cell asks
    # What JupyterLab's widget manager asks, and waits for, before it draws a kernel's first widget: answered now.
    comms = kernel.wait_reply(kernel.client.comm_info(target_name="jupyter.widget"), timeout=30)
    assert run in comms["content"]["comms"]
    kernel.click(run)
    assert kernel.wait_reply(cell, timeout=120)["content"]["status"] == "ok"
    kernel.wait_reply(queued, timeout=120)
    assert value(kernel, "touched") == ["first", "queued"]
    assert value(kernel, "[c.status for c in get_session('run').turns[-1].steps[0].calls]") == ["ok"]
    texts = [m["content"].get("data", {}).get("text/plain", "") for m in kernel.outputs(cell)]
    assert "touch: approved once" in texts  # the buttons were replaced by what the user answered
    assert any('[tool] touch {"note": "first"} -> ✓' in text for text in texts)


def test_skip_runs_nothing_and_the_model_hears_the_user_declined(kernel: Kernel) -> None:
    script(kernel, "skip", "call('touch', note='second')", "'Fine.'")
    start = len(kernel.messages)
    cell = kernel.submit("%%hfchat --session skip\nRecord another.")
    kernel.click(kernel.button("Skip", after=start))
    kernel.wait_reply(cell)
    assert value(kernel, "touched") == []
    assert value(kernel, "[m['content'] for m in backend.requests[1].messages if m['role'] == 'tool'][-1]") == (
        "The user declined to run this tool call."
    )


def test_always_runs_the_next_calls_of_that_tool_without_asking(kernel: Kernel) -> None:
    script(kernel, "always", "call('touch', note='a')", "'ok'", "call('touch', note='b')", "'ok'")
    start = len(kernel.messages)
    cell = kernel.submit("%%hfchat --session always\nRecord a.")
    kernel.click(kernel.button("Always this session", after=start))
    kernel.wait_reply(cell)
    start = len(kernel.messages)
    kernel.run("%%hfchat --session always\nRecord b.")
    assert value(kernel, "touched") == ["a", "b"]
    assert not [m for m in kernel.messages[start:] if m["msg_type"] == "comm_open"]  # no buttons the second time


def test_an_interrupt_ends_the_wait_and_the_session_goes_on(kernel: Kernel) -> None:
    script(kernel, "interrupt", "call('touch', note='never')", "'Still here.'")
    start = len(kernel.messages)
    cell = kernel.submit("%%hfchat --session interrupt\nRecord never.")
    kernel.button("Run", after=start)  # the question is up
    kernel.manager.interrupt_kernel()
    kernel.wait_reply(cell)
    assert value(kernel, "touched") == []
    turn = "get_session('interrupt').turns[-1]"
    assert value(kernel, f"[{turn}.interrupted, {turn}.steps[0].calls[0].status]") == [True, "interrupted"]
    kernel.run("%%hfchat --session interrupt\nHello?")
    assert value(kernel, f"[len(get_session('interrupt').turns), {turn}.reply]") == [2, "Still here."]


def test_an_interrupt_stops_a_hanging_tool_and_keeps_what_finished(kernel: Kernel) -> None:
    script(kernel, "hang", "call('hang')", "'unused'")
    kernel.run("%hfchat tools add hang --session hang")
    cell = kernel.submit("%%hfchat --session hang\nHang.")
    kernel.wait_for(lambda m: m["msg_type"] == "stream" and "hang started" in m["content"]["text"])
    kernel.manager.interrupt_kernel()
    assert kernel.wait_reply(cell, timeout=60)["content"]["status"] == "ok"  # the cell ends as a turn, not a traceback
    call = "get_session('hang').turns[-1].steps[0].calls[0]"
    assert value(kernel, f"[{call}.status, {call}.result]") == ["interrupted", "The call was interrupted by the user."]


# ----------------------------------------------------------------------------- pure parts
def test_code_is_shown_as_code_and_other_arguments_as_json() -> None:
    assert call_preview(ToolCall("run_code", {"code": "print(1)"})) == "print(1)"
    assert json.loads(call_preview(ToolCall("touch", {"note": "x"}))) == {"note": "x"}


def test_input_takes_short_and_long_answers_and_asks_again_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter(["what?", "YES"])
    assert ask_with_input(ToolCall("touch", {"note": "x"}), lambda _prompt: next(answers)) == "run"
    assert ask_with_input(ToolCall("touch"), lambda _prompt: "a") == "always"
    assert ask_with_input(ToolCall("touch"), lambda _prompt: "") == "skip"


def test_the_record_says_what_the_user_answered() -> None:
    bundle = ApprovalRecord(ToolCall("run_code"), "skip")._repr_mimebundle_()
    assert bundle["text/plain"] == "run_code: skipped"
