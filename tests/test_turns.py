"""Turns with tool steps: the messages a later prompt repeats, the OpenAI export, and the JSON round trip."""

from __future__ import annotations

import json

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from hf_magic.backend import Usage
from hf_magic.chat_format import convert_messages
from hf_magic.notebook.transcript import chat_messages
from hf_magic.notebook.turns import ToolCall, ToolStep, Turn


def tool_turn() -> Turn:
    call = ToolCall(name="add", args={"a": 2, "b": 3}, id="call_1", result="5", status="ok", duration=0.01)
    declined = ToolCall(
        name="run_code", args={"code": "1/0"}, id="call_2", result="The user declined.", status="declined"
    )
    return Turn(
        user="What is 2 + 3?",
        reply="2 + 3 = 5.",
        steps=[ToolStep(text="Let me add.", reasoning="Use the tool.", calls=[call, declined])],
        usage=Usage(40, 12),
    )


def test_a_turn_with_tool_steps_repeats_its_calls_and_results_in_order():
    messages = tool_turn().messages()
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, ToolMessage, ToolMessage, AIMessage]
    step = messages[1]
    assert isinstance(step, AIMessage) and step.content == "Let me add."
    assert [(c["name"], c["args"], c["id"]) for c in step.tool_calls] == [
        ("add", {"a": 2, "b": 3}, "call_1"),
        ("run_code", {"code": "1/0"}, "call_2"),
    ]
    assert step.additional_kwargs["reasoning_content"] == "Use the tool."
    assert [(m.tool_call_id, m.content) for m in messages[2:4]] == [("call_1", "5"), ("call_2", "The user declined.")]
    assert messages[-1].content == "2 + 3 = 5."
    convert_messages(messages)  # what a backend receives converts without error


def test_a_plain_turn_is_a_user_message_and_a_reply():
    messages = Turn(user="Hi", reply="Hello", reasoning="greet").messages()
    assert [type(m) for m in messages] == [HumanMessage, AIMessage]
    assert messages[1].additional_kwargs == {"reasoning_content": "greet"}


def test_export_messages_carry_tool_calls_and_tool_messages_in_openais_shape():
    messages = chat_messages([tool_turn()], "Be brief.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    calls = messages[2]["tool_calls"]
    assert calls[0]["type"] == "function" and calls[0]["function"]["name"] == "add"
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 2, "b": 3}
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": "5", "name": "add"}
    assert "reasoning_content" not in messages[2]  # thinking stays in the turns, not in the OpenAI messages


def test_tool_steps_survive_the_json_round_trip():
    turn = tool_turn()
    again = Turn.from_dict(json.loads(json.dumps(turn.to_dict())))
    assert again.steps == turn.steps and again.reply == turn.reply and again.usage == turn.usage
