"""The tool loop's mechanics on a scripted backend (the real parsers, no model): calls run in order, results go back
as tool messages, errors and declines go back to the model, interrupts keep what finished, and the turn carries the
steps to history, export, -o and restore. The same loop on the real model is in test_tool_loop_model.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hf_magic.chat_models import ChatHuggingFace
from hf_magic.errors import InvalidInputError
from hf_magic.notebook import transcript
from hf_magic.notebook.cell_options import reply_message
from hf_magic.notebook.render import Reply, Streaming
from hf_magic.notebook.restore import notebook_turns
from hf_magic.notebook.session import ChatSession
from hf_magic.notebook.session_tools import function_tool, split_names
from hf_magic.notebook.tool_loop import (
    DECLINED,
    MAX_STEPS_REACHED,
    LoopTool,
    ToolLoop,
    result_text,
    stopped_by,
)
from hf_magic.notebook.turns import ToolCall, Turn
from tests.support.replay_backend import ScriptedBackend
from tests.support.tool_functions import add
from tests.support.tool_functions import tool_call_reply as call_text


def fails(reason: str) -> str:
    """Always raises.

    Args:
        reason: what the error says.
    """
    raise ValueError(reason)


def scripted(replies: list[str], name: str = "loop") -> tuple[ChatSession, ScriptedBackend]:
    backend = ScriptedBackend(replies)
    session = ChatSession(f"{name}-{time.monotonic_ns()}")
    session.use_model(ChatHuggingFace(llm=backend))
    return session, backend


def tools(*functions: Any, approve: bool = False) -> list[LoopTool]:
    return [LoopTool(function_tool(f.__name__, f), needs_approval=approve) for f in functions]


def tool_messages(backend: ScriptedBackend, request: int) -> list[dict[str, Any]]:
    return [m for m in backend.requests[request].messages if m["role"] == "tool"]


# ------------------------------------------------------------------------------ the loop
def test_a_call_runs_its_result_goes_back_and_the_model_answers() -> None:
    session, backend = scripted([call_text("add", a=2, b=3), "The sum is 5."])
    turn = session.send("What is 2+3?", responder=ToolLoop(tools(add)))

    assert turn.reply == "The sum is 5." and turn.finish_reason == "stop"
    [step] = turn.steps
    [call] = step.calls
    assert (call.name, call.args, call.status, call.result) == ("add", {"a": 2, "b": 3}, "ok", "5")
    assert call.duration is not None and call.duration >= 0
    # The second request holds the first step: the assistant's call, then the tool's result with the same id.
    assistant = [m for m in backend.requests[1].messages if m.get("tool_calls")]
    assert assistant[0]["tool_calls"][0]["id"] == call.id
    assert tool_messages(backend, 1) == [{"role": "tool", "name": "add", "tool_call_id": call.id, "content": "5"}]
    # Both model calls are in the usage (the scripted backend counts 20 prompt tokens a call).
    assert turn.usage is not None and turn.usage.input_tokens == 40


def test_the_tool_choice_applies_to_the_first_step_only() -> None:
    session, backend = scripted([call_text("add", a=1, b=1), "2"])
    session.send("1+1?", responder=ToolLoop(tools(add), tool_choice="add"))
    assert backend.requests[0].tool_choice == {"type": "function", "function": {"name": "add"}}
    assert backend.requests[1].tool_choice is None and backend.requests[1].tools


def test_calls_of_one_step_run_in_order_and_later_turns_repeat_them() -> None:
    both = call_text("add", a=1, b=2) + "\n" + call_text("add", a=10, b=20)
    session, backend = scripted([both, "3 and 30", "ok"])
    turn = session.send("Two sums", responder=ToolLoop(tools(add)))
    assert [c.result for c in turn.steps[0].calls] == ["3", "30"]
    session.send("Thanks")  # a plain turn after it sends the tool turn again, as the model saw it
    roles = [m["role"] for m in backend.requests[-1].messages]
    assert roles == ["user", "assistant", "tool", "tool", "assistant", "user"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (call_text("fails", reason="disk full"), "fails raised ValueError: disk full"),
        (call_text("nope", x=1), "Unknown tool 'nope': call one of fails"),
        (call_text("fails", because="x"), "Invalid arguments for fails: reason: Field required"),
        ('<tool_call>\n{"name": "fails", "arguments": {"reason": }\n</tool_call>', "Invalid tool call"),
    ],
    ids=["tool-raises", "unknown-tool", "invalid-arguments", "not-json"],
)
def test_what_goes_wrong_goes_back_to_the_model_and_the_session_goes_on(reply: str, expected: str) -> None:
    session, backend = scripted([reply, "Sorry."])
    turn = session.send("Go", responder=ToolLoop(tools(fails)))
    [call] = turn.steps[0].calls
    assert call.status == "error" and call.result is not None and call.result.startswith(expected)
    assert tool_messages(backend, 1)[0]["content"] == call.result
    assert turn.reply == "Sorry." and session.turns == [turn]


def test_the_step_limit_stops_the_loop_and_says_so() -> None:
    session, backend = scripted([call_text("add", a=1, b=1)])  # the model never stops calling
    turn = session.send("Loop", responder=ToolLoop(tools(add), max_steps=3))
    assert len(turn.steps) == 3 and len(backend.requests) == 3
    assert turn.finish_reason == MAX_STEPS_REACHED and turn.reply == ""
    assert "step limit" in Reply(turn)._repr_mimebundle_()[0]["text/plain"]


def test_a_result_too_big_for_the_context_is_cut_with_a_marker() -> None:
    def big() -> str:
        """A very long text."""
        return "x" * 50_000

    session, _ = scripted([call_text("big"), "done"])
    turn = session.send("Go", responder=ToolLoop(tools(big), context_length=2048))
    result = turn.steps[0].calls[0].result
    assert result is not None and "[cut: " in result and len(result) < 2048 * 3


def test_a_skipped_call_does_not_run_and_the_model_hears_the_user_declined() -> None:
    ran: list[str] = []

    def touch(note: str) -> str:
        """Record a note.

        Args:
            note: the note.
        """
        ran.append(note)
        return "recorded"

    asked: list[ToolCall] = []

    def skip(call: ToolCall, cancel: threading.Event) -> str:
        asked.append(call)
        return "skip"

    session, backend = scripted([call_text("touch", note="hi"), "ok"])
    turn = session.send("Go", responder=ToolLoop(tools(touch, approve=True), approve=skip))  # type: ignore[arg-type]
    assert ran == [] and [c.args for c in asked] == [{"note": "hi"}]
    assert turn.steps[0].calls[0].status == "declined"
    assert tool_messages(backend, 1)[0]["content"] == DECLINED


def test_nothing_that_needs_approval_runs_when_nobody_can_be_asked() -> None:
    ran: list[int] = []

    def touch() -> str:
        """Touch."""
        ran.append(1)
        return "done"

    session, _ = scripted([call_text("touch"), "ok"])
    turn = session.send("Go", responder=ToolLoop(tools(touch, approve=True)))  # the default approver asks nobody
    assert ran == [] and turn.steps[0].calls[0].status == "declined"


def test_stop_ends_a_hanging_tool_and_keeps_what_finished() -> None:
    started = threading.Event()

    def hang() -> str:
        """Never returns on its own."""
        started.set()
        while True:
            time.sleep(0.01)

    session, _ = scripted([call_text("add", a=1, b=2) + "\n" + call_text("hang") + "\n" + call_text("add", a=3, b=4)])
    outcome: dict[str, Turn] = {}
    worker = threading.Thread(
        target=lambda: outcome.setdefault("turn", session.send("Go", responder=ToolLoop(tools(add, hang))))
    )
    worker.start()
    assert started.wait(60)
    session.stop()
    worker.join(30)
    assert not worker.is_alive()
    turn = outcome["turn"]
    assert [c.status for c in turn.steps[0].calls] == ["ok", "interrupted", "pending"]
    assert turn.interrupted and turn.finish_reason == "interrupted" and session.turns == [turn]
    # Every call has a result, so that the next prompt pairs each call with an answer.
    assert all(c.result for c in turn.steps[0].calls)


def test_a_keyboard_interrupt_in_a_tool_ends_the_loop_with_the_turn_kept() -> None:
    def interrupted() -> str:
        """Interrupted by the user."""
        raise KeyboardInterrupt

    session, backend = scripted([call_text("interrupted"), "never"])
    turn = session.send("Go", responder=ToolLoop(tools(interrupted)))
    assert turn.interrupted and turn.steps[0].calls[0].status == "interrupted"
    assert len(backend.requests) == 1 and session.turns == [turn]


def test_stop_wakes_a_tool_asleep_on_the_main_thread() -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt), stopped_by(cancel):
        time.sleep(30)
    assert time.perf_counter() - started < 10


def test_the_loop_refuses_what_cannot_work_before_any_step() -> None:
    with pytest.raises(InvalidInputError, match="not a bound tool"):
        ToolLoop(tools(add), tool_choice="subtract")
    with pytest.raises(InvalidInputError, match="--max-steps must be 1 or more"):
        ToolLoop(tools(add), max_steps=0)
    with pytest.raises(InvalidInputError, match="Two tools are called add"):
        ToolLoop(tools(add, add))


# ----------------------------------------------------------------------- the turn carries it
@pytest.fixture(scope="module")
def tool_turn() -> tuple[ChatSession, Turn]:
    session, _ = scripted(["Let me add. " + call_text("add", a=2, b=3), "It is 5."], name="carried")
    return session, session.send("What is 2+3?", responder=ToolLoop(tools(add)))


def test_the_steps_text_moves_out_of_the_reply(tool_turn: tuple[ChatSession, Turn]) -> None:
    _, turn = tool_turn
    assert turn.steps[0].text.strip() == "Let me add." and turn.reply == "It is 5."


def test_export_has_openai_tool_calls_and_tool_messages_and_loads_back(
    tool_turn: tuple[ChatSession, Turn], tmp_path: Path
) -> None:
    session, turn = tool_turn
    path = session.export(tmp_path / "chat.json")
    data = json.loads(path.read_text())
    roles = [m["role"] for m in data["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert data["messages"][1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    turns, _ = transcript.read(path)
    assert turns[0].steps == turn.steps


def test_o_gets_the_steps_and_the_whole_usage(tool_turn: tuple[ChatSession, Turn]) -> None:
    _, turn = tool_turn
    message = reply_message(turn)
    assert message.content == "It is 5."
    assert message.response_metadata["tool_steps"][0]["calls"][0]["result"] == "5"
    assert message.usage_metadata is not None and message.usage_metadata["input_tokens"] == 40


def test_cells_show_each_call_as_a_block_and_restore_gives_the_steps_back(
    tool_turn: tuple[ChatSession, Turn],
) -> None:
    import nbformat

    _, turn = tool_turn
    data, metadata = Reply(turn, session="carried")._repr_mimebundle_()
    html = data["text/html"]
    assert html.count('class="hfm-tool hfm-tool-ok"') == 1 and "<code>add</code>" in html
    assert html.index("hfm-tool") < html.index("It is 5.")  # the blocks come before the answer
    assert "[tool] add" in data["text/plain"]
    cell = nbformat.v4.new_code_cell("%%hfchat --tools add\nWhat is 2+3?")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data, metadata=metadata)]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    [restored] = notebook_turns(notebook, "carried")
    assert restored.steps == turn.steps and restored.messages()[1:] == turn.messages()[1:]


def test_the_streaming_view_draws_the_blocks_above_the_text(tool_turn: tuple[ChatSession, Turn]) -> None:
    _, turn = tool_turn
    bundle = Streaming("It is", steps=turn.steps)._repr_mimebundle_()
    assert bundle["text/html"].index("hfm-tool") < bundle["text/html"].index("It is")


# --------------------------------------------------------------------------- tools
def test_a_functions_schema_comes_from_its_signature_and_docstring() -> None:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    spec = convert_to_openai_tool(function_tool("add", add))["function"]
    assert spec["name"] == "add" and spec["description"].startswith("Add two integers.")
    assert spec["parameters"]["properties"]["a"] == {"type": "integer", "description": "the first number."}
    assert spec["parameters"]["required"] == ["a", "b"]


def test_a_lambda_takes_its_variables_name_and_a_non_callable_is_one_line() -> None:
    assert function_tool("double", lambda x: 2 * x).name == "double"
    with pytest.raises(InvalidInputError, match="'rows' is a list, not a function"):
        function_tool("rows", [1, 2])


def test_results_become_text_the_way_a_model_reads_them() -> None:
    pandas = pytest.importorskip("pandas")
    assert result_text("plain") == "plain" and result_text({"a": [1, 2]}) == '{"a": [1, 2]}'
    table = result_text(pandas.DataFrame({"x": range(100)}))
    assert table.startswith("DataFrame: 100 rows x 1 columns") and len(table) < 4100


def test_tool_names_split_on_commas_once_each() -> None:
    assert split_names(["a,b", "b", " c "]) == ["a", "b", "c"] and split_names(None) == []


def test_a_servers_streamed_call_pieces_become_whole_calls() -> None:
    from hf_magic.notebook.reply_stream import assembled_tool_calls

    pieces = [
        {"name": "add", "args": None, "id": "call_1", "index": 0},
        {"name": None, "args": '{"a": 1', "id": None, "index": 0},
        {"name": None, "args": ', "b": 2}', "id": None, "index": 0},
        {"name": "add", "args": '"Paris"', "id": "call_2", "index": 1},
    ]
    calls, invalid = assembled_tool_calls(pieces)
    assert [(c["name"], c["args"], c["id"]) for c in calls] == [("add", {"a": 1, "b": 2}, "call_1")]
    assert [(c["name"], c["args"]) for c in invalid] == [("add", '"Paris"')]


def test_the_panel_draws_the_calls_as_they_happen_and_the_same_blocks_after() -> None:
    from hf_magic.notebook.panel import ChatPanel

    session, _ = scripted([call_text("add", a=2, b=3), "It is 5."], name="panel")
    panel = ChatPanel(session)
    drawn: list[str] = []
    session.subscribe(
        lambda event: drawn.append(panel.view.transcript.children[0].value) if event.kind == "tool" else 0
    )
    turn = session.send("2+3?", responder=ToolLoop(tools(add)))
    assert any("hfm-tool-running" in html for html in drawn)  # live, while the call ran
    final = panel.view.transcript.children[0].value
    assert "It is 5." in final
    block = 'class="hfm-tool hfm-tool-ok"'
    assert final.count(block) == Reply(turn)._repr_mimebundle_()[0]["text/html"].count(block) == 1
