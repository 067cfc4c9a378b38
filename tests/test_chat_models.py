"""Message converters, tool_choice normalisation and structured output over a stand-in backend: no model needed."""

from __future__ import annotations

import json

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import BaseModel

from hf_magic import ChatDelta, ChatHuggingFace, InvalidInputError, Usage
from hf_magic.chat_models import (
    StructuredOutputCutError,
    convert_delta_to_chunk,
    convert_delta_to_message,
    convert_message_to_dict,
    convert_messages,
    normalize_tool_choice,
)
from tests.support.replay_backend import ReplayBackend

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_roles_map_to_openai_shapes():
    assert convert_message_to_dict(SystemMessage("be brief")) == {"role": "system", "content": "be brief"}
    assert convert_message_to_dict(HumanMessage("hi")) == {"role": "user", "content": "hi"}
    assert convert_message_to_dict(AIMessage("hello")) == {"role": "assistant", "content": "hello"}
    assert convert_message_to_dict(ChatMessage(role="user", content="x")) == {"role": "user", "content": "x"}


def test_ai_message_with_tool_calls_keeps_ids_and_json_arguments():
    message = AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}])
    converted = convert_message_to_dict(message)
    assert converted["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]


def test_tool_message_carries_its_call_id():
    converted = convert_message_to_dict(ToolMessage(content="18C", tool_call_id="call_1"))
    assert converted == {"role": "tool", "content": "18C", "tool_call_id": "call_1"}


def test_unsupported_message_type_gets_one_clear_line():
    with pytest.raises(InvalidInputError, match="FunctionMessage are not supported") as info:
        convert_message_to_dict(FunctionMessage(name="f", content="x"))
    assert "\n" not in str(info.value)


def test_empty_message_list_is_rejected():
    with pytest.raises(InvalidInputError, match="No messages"):
        convert_messages([])


def test_whole_reply_becomes_an_ai_message_with_usage_and_metadata():
    delta = ChatDelta(text="Paris.", finish_reason="stop", usage=Usage(10, 3), model_name="m")
    message = convert_delta_to_message(delta)
    assert message.content == "Paris."
    assert message.usage_metadata == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["model_name"] == "m"


def test_only_the_last_chunk_carries_metadata():
    middle = convert_delta_to_chunk(ChatDelta(text="Par"))
    last = convert_delta_to_chunk(ChatDelta(text="", finish_reason="length", usage=Usage(1, 2), model_name="m"))
    assert middle.response_metadata == {} and middle.usage_metadata is None
    assert last.chunk_position == "last"
    assert last.response_metadata["finish_reason"] == "length"
    merged = middle + last
    assert merged.usage_metadata["total_tokens"] == 3


def test_parsed_tool_calls_stream_as_chunks_that_merge_back():
    call = {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_9"}
    delta = ChatDelta(tool_calls=[call], finish_reason="stop")
    chunk = convert_delta_to_chunk(delta)
    assert chunk.tool_calls == [{**call, "type": "tool_call"}]
    assert json.loads(chunk.tool_call_chunks[0]["args"]) == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", "auto"),
        ("none", "none"),
        ("any", "required"),
        ("required", "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
        (True, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_forms(choice, expected):
    assert normalize_tool_choice(choice, [WEATHER]) == expected


def test_tool_choice_naming_an_unbound_tool_is_rejected():
    with pytest.raises(InvalidInputError, match="not a bound tool"):
        normalize_tool_choice("send_email", [WEATHER])


# ------------------------------------------------------- structured output cut by the token limit


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str
    punchline: str


CUT_CALL = '<tool_call>\n{"name": "Joke", "arguments": {"setup": "The cat is a cat, a cat is'
CUT_JSON = '{"setup": "The cat is a cat, a cat is'


@pytest.mark.parametrize(("method", "text"), [("function_calling", CUT_CALL), ("json_schema", CUT_JSON)])
async def test_reply_cut_before_the_json_closed_says_to_raise_max_new_tokens(method, text):
    structured = ChatHuggingFace(llm=ReplayBackend([text], "length", output_tokens=64)).with_structured_output(
        Joke, method=method
    )
    expected = r"cut at max_new_tokens=64 before the JSON closed: raise max_new_tokens\.$"
    with pytest.raises(StructuredOutputCutError, match=expected):
        structured.invoke("Tell me a joke about cats.")
    with pytest.raises(StructuredOutputCutError, match=expected):
        list(structured.stream("Tell me a joke about cats."))
    with pytest.raises(StructuredOutputCutError, match=expected):
        await structured.ainvoke("Tell me a joke about cats.")


def test_cut_reply_with_include_raw_is_a_parsing_error_not_an_exception():
    chat = ChatHuggingFace(llm=ReplayBackend([CUT_CALL], "length", output_tokens=64))
    result = chat.with_structured_output(Joke, include_raw=True).invoke("Tell me a joke about cats.")
    assert result["parsed"] is None
    assert isinstance(result["parsing_error"], StructuredOutputCutError)
    assert isinstance(result["parsing_error"], OutputParserException)  # what langchain's retry parsers catch
    assert result["raw"].invalid_tool_calls  # the cut call is still there to inspect


@pytest.mark.parametrize(
    ("method", "text"),
    [
        ("function_calling", '<tool_call>\n{"name": "Joke", "arguments": {"setup": "Why?", "punchline": ""}}\n</tool'),
        ("json_schema", '{"setup": "Why?", "punchline": ""}'),
        ("json_mode", '```json\n{"setup": "Why?", "punchline": ""}'),
    ],
)
def test_json_that_closed_on_the_last_token_is_parsed(method, text):
    # What the grammar's close within the budget produces: finish_reason "length", JSON whole.
    structured = ChatHuggingFace(llm=ReplayBackend([text], "length", output_tokens=64)).with_structured_output(
        Joke, method=method
    )
    assert structured.invoke("Tell me a joke about cats.") == Joke(setup="Why?", punchline="")


def test_broken_json_that_the_limit_did_not_cut_keeps_the_parsers_own_error():
    structured = ChatHuggingFace(llm=ReplayBackend([CUT_JSON], "stop", output_tokens=64)).with_structured_output(
        Joke, method="json_schema"
    )
    with pytest.raises(OutputParserException) as info:
        structured.invoke("Tell me a joke about cats.")
    assert not isinstance(info.value, StructuredOutputCutError)
