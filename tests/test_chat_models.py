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
from hf_magic.chat_format import (
    convert_delta_to_chunk,
    convert_delta_to_message,
    convert_message_to_dict,
    convert_messages,
    normalize_tool_choice,
)
from hf_magic.errors import StructuredOutputCutError
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


def test_standard_image_blocks_become_openai_image_url_parts_once_for_every_backend():
    content = [
        "Describe",
        {"type": "text", "text": "these"},
        {"type": "image", "url": "https://example.com/a.png"},
        {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"},
        {"type": "image", "source_type": "base64", "data": "/9j/4AAQ", "mime_type": "image/jpeg"},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
    ]
    converted = convert_messages([HumanMessage(content=content), AIMessage("plain text stays")])  # type: ignore[arg-type]
    assert converted[0]["content"] == [
        {"type": "text", "text": "Describe"},
        {"type": "text", "text": "these"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
    ]
    assert converted[1] == {"role": "assistant", "content": "plain text stays"}


def test_a_tool_call_without_an_id_gets_one_so_its_result_can_be_paired():
    message = AIMessage("", tool_calls=[{"name": "get_weather", "args": {}, "id": None}])
    assert convert_message_to_dict(message)["tool_calls"][0]["id"] == "call_0"


def test_stream_deltas_hands_on_the_backends_typed_deltas():
    model = ChatHuggingFace(llm=ReplayBackend(["Hel", "lo"], finish_reason="stop"))
    deltas = list(model.stream_deltas([HumanMessage("hi")], max_new_tokens=4))
    assert [delta.text for delta in deltas] == ["Hel", "lo", ""]
    assert deltas[-1].finish_reason == "stop" and isinstance(deltas[-1].usage, Usage)
    chunks = list(model.stream([HumanMessage("hi")]))
    assert "".join(str(chunk.content) for chunk in chunks) == "Hello"
    assert chunks[-1].response_metadata["finish_reason"] == "stop"


def test_a_bad_constructor_argument_is_one_line_not_pydantics_report():
    with pytest.raises(InvalidInputError, match="n > 1 is not supported") as caught:
        ChatHuggingFace(llm=ReplayBackend([]), n=3)
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidInputError, match="Invalid temperature for ChatHuggingFace") as caught:
        ChatHuggingFace(llm=ReplayBackend([]), temperature="hot")
    assert "\n" not in str(caught.value)
