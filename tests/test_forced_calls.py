"""Forced tool calls sent as JSON-schema responses (remote/forced_calls.py): which requests qualify, what is sent,
and how the reply becomes the tool call, whole and streamed. Against a real vLLM: test_standard_endpoint.py."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk

from hf_magic.backend import ChatDelta, ChatRequest
from hf_magic.chat_format import convert_delta_to_chunk
from hf_magic.remote.forced_calls import ForcedCall, as_schema_request, forced_tool


def _tool(name: str) -> dict[str, Any]:
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def _request(tool_choice: Any, *names: str, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[], tools=[_tool(n) for n in names], tool_choice=tool_choice, **fields)


def test_only_a_call_of_one_forced_tool_qualifies() -> None:
    named = {"type": "function", "function": {"name": "b"}}
    assert forced_tool(_request(named, "a", "b")) == _tool("b")
    assert forced_tool(_request("required", "a")) == _tool("a")
    assert forced_tool(_request("required", "a", "b")) is None  # the model picks among several
    assert forced_tool(_request("auto", "a")) is None
    assert forced_tool(_request(None, "a")) is None
    assert forced_tool(_request(named, "a", "b", response_format={"type": "json_object"})) is None


def test_the_request_asks_for_the_tools_parameters_and_keeps_the_tools_unforced() -> None:
    args = {"tools": [_tool("a")], "tool_choice": "required", "max_tokens": 8, "messages": []}
    asked = as_schema_request(args, _tool("a"))
    assert asked["tools"] == [_tool("a")] and asked["tool_choice"] == "none" and asked["max_tokens"] == 8
    schema = asked["response_format"]["json_schema"]["schema"]
    assert schema["properties"] == {"name": {"const": "a"}, "arguments": _tool("a")["function"]["parameters"]}
    assert schema["required"] == ["name", "arguments"] and schema["additionalProperties"] is False


WRAPPED = '{"name":"get_weather","arguments":{"city":"Paris","where":{"x":1}}}'


def test_a_whole_reply_becomes_the_call_or_an_invalid_call() -> None:
    valid = ForcedCall(_tool("get_weather")).whole(ChatDelta(text=WRAPPED, finish_reason="stop"))
    assert valid.text == "" and valid.finish_reason == "stop"
    assert [(c["name"], c["args"]) for c in valid.tool_calls] == [("get_weather", {"city": "Paris", "where": {"x": 1}})]
    cut = ForcedCall(_tool("get_weather")).whole(ChatDelta(text=WRAPPED[:45], finish_reason="length"))
    assert cut.tool_calls == [] and cut.invalid_tool_calls[0]["args"] == '{"city":"Pa'
    # A server that ignored the schema: its text is the arguments, reported as they are.
    loose = ForcedCall(_tool("get_weather")).whole(ChatDelta(text="Paris", finish_reason="stop"))
    assert loose.tool_calls == [] and loose.invalid_tool_calls[0]["args"] == "Paris"


@pytest.mark.parametrize("size", [1, 3, 7, 100])
def test_streamed_pieces_add_up_to_the_arguments(size: int) -> None:
    call = ForcedCall(_tool("get_weather"))
    pieces = [ChatDelta(text=WRAPPED[i : i + size]) for i in range(0, len(WRAPPED), size)]
    pieces.insert(1, ChatDelta(reasoning="hm"))
    merged: AIMessageChunk | None = None
    for delta in [*pieces, ChatDelta(finish_reason="stop")]:
        chunk = convert_delta_to_chunk(call.chunk(delta))
        merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.content == ""
    assert [(c["name"], c["args"], c["id"]) for c in merged.tool_calls] == [
        ("get_weather", {"city": "Paris", "where": {"x": 1}}, call.call_id)
    ]
    assert "".join(c["args"] for c in merged.tool_call_chunks) == '{"city":"Paris","where":{"x":1}}'
