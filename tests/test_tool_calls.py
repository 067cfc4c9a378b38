"""Tool calls in a local model's text: parsing, streaming hold-back, prompts for templates that ignore tools;
at the end, forced and free tool calls on the real default model."""

from __future__ import annotations

import json
import re

import pytest

from hf_magic.backend import ChatDelta
from hf_magic.local.chat_template import to_template_messages
from hf_magic.local.tool_calls import (
    ToolCallStream,
    attach_tool_calls,
    parse_tool_calls,
    tool_call_text,
    tools_system_prompt,
    with_tools_in_text,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


# ------------------------------------------------------------------------------------ parsing
def test_tagged_call_is_parsed_and_removed_from_content():
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    parsed = parse_tool_calls(text)
    assert parsed.content == "Let me check."
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert re.fullmatch(r"call_[0-9a-f]{24}", parsed.tool_calls[0]["id"])
    assert parsed.tool_calls[0]["type"] == "tool_call"
    assert parsed.invalid_tool_calls == []


def test_several_tagged_calls_get_distinct_ids():
    text = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "b", "parameters": {"x": 1}}</tool_call>'
    )
    parsed = parse_tool_calls(text)
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [("a", {}), ("b", {"x": 1})]
    assert len({c["id"] for c in parsed.tool_calls}) == 2
    assert parsed.content == ""


def test_list_of_calls_inside_one_tag():
    text = '<tool_call>[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]</tool_call>'
    assert [c["name"] for c in parse_tool_calls(text).tool_calls] == ["a", "b"]


def test_arguments_given_as_a_json_string_are_decoded():
    text = '<tool_call>{"name": "a", "arguments": "{\\"x\\": 2}"}</tool_call>'
    assert parse_tool_calls(text).tool_calls[0]["args"] == {"x": 2}


def test_unterminated_tag_is_still_read():
    parsed = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}')
    assert parsed.tool_calls[0]["args"] == {"city": "Rome"}


def test_call_whose_closing_tag_was_cut_by_the_token_limit_is_whole():
    # Recorded from SmolLM2-135M (forced call of Joke, sampled, seed 0, max_tokens=60): the budget ran out
    # inside "</tool_call>" after the JSON had closed.
    text = (
        '<tool_call>\n{"name": "Joke", "arguments": {"setup": "what does a cat do, and what does a cat do?", '
        '"punchline": "it eats and sleeps and is a cat."}}\n</tool_'
    )
    parsed = parse_tool_calls(text)
    assert parsed.invalid_tool_calls == []
    assert parsed.tool_calls[0]["args"]["punchline"] == "it eats and sleeps and is a cat."


def test_bare_json_call_and_list_of_calls():
    parsed = parse_tool_calls('{"name": "get_weather", "parameters": {"city": "Oslo"}}', ["get_weather"])
    assert parsed.content == ""
    assert parsed.tool_calls[0]["args"] == {"city": "Oslo"}
    listed = parse_tool_calls('[{"name": "get_weather", "arguments": {"city": "A"}}]', ["get_weather"])
    assert [c["args"] for c in listed.tool_calls] == [{"city": "A"}]
    fenced = parse_tool_calls('```json\n{"name": "get_weather", "arguments": {"city": "B"}}\n```', ["get_weather"])
    assert fenced.tool_calls[0]["args"] == {"city": "B"}


def test_bare_json_naming_no_bound_tool_is_an_ordinary_answer():
    text = '{"name": "Alice", "arguments": {"age": 3}}'
    parsed = parse_tool_calls(text, ["get_weather"])
    assert parsed.content == text
    assert parsed.tool_calls == parsed.invalid_tool_calls == []


def test_plain_text_has_no_calls():
    parsed = parse_tool_calls("The capital of France is Paris.", ["get_weather"])
    assert parsed.content == "The capital of France is Paris."
    assert parsed.tool_calls == []


def test_malformed_json_becomes_an_invalid_tool_call_not_an_exception():
    raw = '{"name": "get_weather", "arguments": {"city": "Par'
    parsed = parse_tool_calls(f"<tool_call>{raw}</tool_call>")
    assert parsed.tool_calls == []
    (invalid,) = parsed.invalid_tool_calls
    assert invalid["name"] == "get_weather"
    assert invalid["args"] == raw
    assert "not valid JSON" in invalid["error"]
    assert invalid["type"] == "invalid_tool_call"
    assert invalid["id"].startswith("call_")


def test_truncated_bare_call_is_invalid():
    parsed = parse_tool_calls('{"name": "get_weather", "arguments": {"ci', ["get_weather"])
    assert parsed.tool_calls == [] and parsed.invalid_tool_calls[0]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"arguments": {}}', '"name"'),
        ('{"name": "a", "arguments": [1, 2]}', "JSON object"),
        ('{"name": "a", "arguments": "{oops"}', "not valid JSON"),
    ],
)
def test_calls_of_the_wrong_shape_are_invalid(body, reason):
    parsed = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert parsed.tool_calls == []
    assert reason in parsed.invalid_tool_calls[0]["error"]


# ---------------------------------------------------------------------------------- prompting
def test_tools_prompt_lists_every_tool_schema_and_the_format():
    prompt = tools_system_prompt([WEATHER])
    assert json.dumps(WEATHER) in prompt
    assert "<tool_call>" in prompt and "</tool_call>" in prompt


def test_history_with_tool_calls_is_written_as_text_for_templates_that_ignore_tools():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    adapted = with_tools_in_text(to_template_messages(messages), [WEATHER])
    assert adapted[0]["role"] == "system" and adapted[0]["content"].startswith("Be brief.\n\n")
    assert "get_weather" in adapted[0]["content"]
    assert "tool_calls" not in adapted[2]
    call = parse_tool_calls(adapted[2]["content"]).tool_calls[0]
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Paris"})
    assert adapted[3] == {"role": "tool", "content": "<tool_response>\nsunny\n</tool_response>", "tool_call_id": "c1"}
    assert messages[2]["tool_calls"]  # the caller's messages are not modified


def test_tools_prompt_becomes_the_system_message_when_there_is_none():
    adapted = with_tools_in_text([{"role": "user", "content": "hi"}], [WEATHER])
    assert adapted[0]["role"] == "system" and "<tools>" in adapted[0]["content"]


def test_tool_call_text_round_trips_through_the_parser():
    text = tool_call_text([{"function": {"name": "f", "arguments": {"x": [1, 2]}}}])
    assert parse_tool_calls(text).tool_calls[0]["args"] == {"x": [1, 2]}


# ---------------------------------------------------------------------------------- streaming
def _stream(pieces: list[str], names: list[str]) -> tuple[list[str], ChatDelta]:
    deltas = [ChatDelta(text=piece) for piece in pieces] + [ChatDelta(finish_reason="stop")]
    out = list(attach_tool_calls(iter(deltas), names))
    return [d.text for d in out[:-1]], out[-1]


def test_stream_shows_plain_text_as_it_comes():
    shown, last = _stream(["The ", "capital ", "is Paris."], ["get_weather"])
    assert shown == ["The ", "capital ", "is Paris."]
    assert last.tool_calls == [] and last.finish_reason == "stop"


def test_stream_holds_back_a_tagged_call_and_parses_it_at_the_end():
    call = ['{"name": "get_weather", ', '"arguments": {"city": "Paris"}}']
    pieces = ["Sure. <to", "ol_call>\n", *call, "\n</tool", "_call>"]  # tags split across tokens
    shown, last = _stream(pieces, ["get_weather"])
    assert "".join(shown) == "Sure. "
    assert "<" not in "".join(shown)
    assert last.text == ""
    assert last.tool_calls[0]["args"] == {"city": "Paris"}
    assert last.finish_reason == "tool_calls"


def test_stream_holds_back_a_bare_json_call():
    shown, last = _stream(['{"na', 'me": "get_weather", "arguments": {"city": "X"}}'], ["get_weather"])
    assert shown == []
    assert last.tool_calls[0]["args"] == {"city": "X"}


def test_stream_releases_json_that_is_not_a_call_at_the_end():
    shown, last = _stream(['{"answer"', ": 42}"], ["get_weather"])
    assert "".join(shown) + last.text == '{"answer": 42}'
    assert last.tool_calls == []


def test_stream_keeps_an_invalid_call_out_of_the_content():
    shown, last = _stream(["<tool_call>{bad json</tool_call>"], ["get_weather"])
    assert shown == [] and last.text == ""
    assert last.invalid_tool_calls[0]["args"] == "{bad json"


def test_tool_call_stream_never_shows_text_twice():
    stream = ToolCallStream(["f"])
    pieces = ["Hello", " <", "b>", " world"]
    shown = "".join(stream.push(piece) for piece in pieces)
    assert shown + stream.finish().content == "Hello <b> world"


# ------------------------------------------------------------------- on the real default model
def _weather_tools():
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"18 degrees and sunny in {city}"

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return get_weather, add


@pytest.mark.integration
@pytest.mark.parametrize("tool_choice", ["any", "required"])
def test_forced_call_is_a_valid_call_of_a_bound_tool(chat_model, tool_choice):
    tools = {t.name: t for t in _weather_tools()}
    reply = chat_model.bind_tools(list(tools.values()), tool_choice=tool_choice).invoke(
        "What is the weather in Paris?", max_tokens=48
    )
    assert reply.invalid_tool_calls == []
    (call,) = reply.tool_calls
    assert call["name"] in tools
    tools[call["name"]].invoke(call)  # the arguments validate against the tool's own schema
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert "<tool_call>" not in reply.content


@pytest.mark.integration
def test_named_tool_choice_calls_that_tool_with_valid_arguments(chat_model):
    get_weather, add = _weather_tools()
    reply = chat_model.bind_tools([get_weather, add], tool_choice="add").invoke("What is 2 plus 3?", max_tokens=48)
    (call,) = reply.tool_calls
    assert call["name"] == "add"
    assert isinstance(add.invoke(call["args"]), int)


@pytest.mark.integration
def test_streamed_forced_call_arrives_as_tool_call_chunks(chat_model):
    get_weather, _ = _weather_tools()
    chunks = list(chat_model.bind_tools([get_weather], tool_choice="get_weather").stream("Weather in Rome?"))
    assert all("<tool_call>" not in chunk.content for chunk in chunks)
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    (call,) = full.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert full.usage_metadata and full.usage_metadata["output_tokens"] > 0


@pytest.mark.integration
async def test_async_forced_call(chat_model):
    get_weather, _ = _weather_tools()
    reply = await chat_model.bind_tools([get_weather], tool_choice="any").ainvoke("Weather in Oslo?", max_tokens=48)
    assert reply.tool_calls[0]["name"] == "get_weather"


@pytest.mark.integration
def test_smollm2_template_ignores_tools_so_they_are_described_in_the_system_message(default_llm):
    from hf_magic.backend import ChatRequest
    from hf_magic.local.tool_calls import template_ignores_tool_calls, template_ignores_tools

    assert template_ignores_tools(default_llm.tokenizer)
    assert template_ignores_tool_calls(default_llm.tokenizer)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    request = ChatRequest(messages=[{"role": "user", "content": "Hi"}], tools=tools)
    prompt = default_llm.tokenizer.decode(default_llm._chat_input_ids(request))
    assert prompt.startswith("<|im_start|>system\n") and '"name": "get_weather"' in prompt
    request.tool_choice = "none"  # no tools offered: the prompt is the plain one
    assert "get_weather" not in default_llm.tokenizer.decode(default_llm._chat_input_ids(request))


@pytest.mark.integration
def test_history_with_tool_calls_and_results_renders_and_answers(chat_model, default_llm):
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    from hf_magic.backend import ChatRequest
    from hf_magic.chat_format import convert_messages

    get_weather, _ = _weather_tools()
    history = [
        HumanMessage("What is the weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}]),
        ToolMessage("18 degrees and sunny", tool_call_id="call_1"),
    ]
    request = ChatRequest(messages=convert_messages(history))
    prompt = default_llm.tokenizer.decode(default_llm._chat_input_ids(request))
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<|im_start|>tool\n<tool_response>\n18 degrees and sunny\n</tool_response><|im_end|>" in prompt
    reply = chat_model.bind_tools([get_weather]).invoke(history, max_tokens=32)
    assert reply.content or reply.tool_calls
