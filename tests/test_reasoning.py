"""Thinking kept apart from the answer: the incremental parsers, the langchain representation, and endpoints
that send ``reasoning_content`` / ``reasoning`` or write ``<think>`` inline (recorded server responses)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
from hf_magic.backend import ChatDelta, Usage, join_deltas
from hf_magic.chat_format import convert_delta_to_chunk, convert_delta_to_message, convert_message_to_dict
from hf_magic.local.harmony import HarmonyParser
from hf_magic.local.tool_calls import parse_tool_calls
from hf_magic.reasoning import ReplyParser, ReplySplitter, ThinkTagParser, split_reasoning, split_stream
from tests.support.http_recorder import Reply, chunk, completion
from tests.support.replay_backend import ReplayBackend

pytest_plugins = ["tests.support.http_recorder"]

THOUGHT = "<think>\nTwo plus two. </think>\n\nThe answer is 4."
HARMONY = (
    "<|channel|>analysis<|message|>User wants 2+2. Easy.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>The answer is 4."
)
HARMONY_CALL = (
    "<|channel|>analysis<|message|>Need the weather.<|end|>"
    '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}'
    "<|call|>"
)


def feed(parser: ReplyParser, pieces: list[str]) -> tuple[list[tuple[str, str]], str, str]:
    """Each piece's (reasoning, text) as the parser returns it, and the whole reasoning and text."""
    parts = [parser.push(piece) for piece in pieces]
    end = parser.finish()
    steps = [(p.reasoning, p.text) for p in parts] + [(end.reasoning, end.text)]
    return steps, "".join(r for r, _ in steps), "".join(t for _, t in steps)


def every_split(text: str) -> list[list[str]]:
    """``text`` cut in two at every position, and cut into single characters."""
    return [[text[:at], text[at:]] for at in range(len(text) + 1)] + [list(text)]


# ------------------------------------------------------------------------------- <think> tags
@pytest.mark.parametrize("pieces", every_split(THOUGHT))
def test_think_tags_split_the_same_however_the_text_is_cut(pieces):
    _, reasoning, text = feed(ThinkTagParser(), pieces)
    assert (reasoning, text) == ("\nTwo plus two. ", "The answer is 4.")


def test_no_piece_shows_a_tag_or_part_of_one():
    steps, _, _ = feed(ThinkTagParser(), list(THOUGHT))
    for reasoning, text in steps:
        assert "<" not in reasoning + text and ">" not in reasoning + text


def test_thinking_streams_before_it_closes():
    parser = ThinkTagParser()
    assert parser.push("<think>Let me").reasoning == "Let me"
    assert parser.push(" see</thi").reasoning == " see"  # the partial close tag is held back
    assert (parser.push("nk>Yes").text, parser.thinking) == ("Yes", False)


def test_a_prewritten_open_tag_starts_inside_the_thinking():
    _, reasoning, text = feed(ThinkTagParser(thinking=True), ["Hmm, 2+2", "</think>", "\n4"])
    assert (reasoning, text) == ("Hmm, 2+2", "4")


def test_thinking_that_never_closes_is_all_reasoning_and_says_so():
    parser = ThinkTagParser()
    parser.push("<think>Still going and go")
    end = parser.finish()
    assert end.still_thinking and end.text == ""


def test_a_think_block_without_an_answer():
    _, reasoning, text = feed(ThinkTagParser(), ["<think>done</think>\n\n"])
    assert (reasoning, text) == ("done", "")


def test_a_tag_inside_an_answer_is_text_and_plain_replies_pass_unchanged():
    assert split_reasoning("Use <think> tags.") == ("", "Use <think> tags.")
    assert split_reasoning("  <thi") == ("", "  <thi")  # ended before it could be a tag
    assert split_reasoning("Paris.") == ("", "Paris.")


# ---------------------------------------------------------------------------- gpt-oss channels
@pytest.mark.parametrize("pieces", [*every_split(HARMONY)[::7], list(HARMONY)])
def test_gpt_oss_analysis_is_thinking_and_final_is_the_answer(pieces):
    _, reasoning, text = feed(HarmonyParser(), pieces)
    assert (reasoning, text) == ("User wants 2+2. Easy.", "The answer is 4.")


def test_gpt_oss_call_to_functions_is_a_tool_call():
    parser = HarmonyParser()
    shown = [parser.push(piece) for piece in HARMONY_CALL]
    end = parser.finish()
    assert "".join(p.text for p in shown) + end.text == ""
    assert "".join(p.reasoning for p in shown) == "Need the weather."
    assert [(c["name"], c["args"]) for c in end.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert not end.still_thinking


def test_gpt_oss_cut_inside_analysis_is_still_thinking():
    parser = HarmonyParser()
    parser.push("<|channel|>analysis<|message|>Thinking about it")
    end = parser.finish()
    assert end.still_thinking and end.text == ""


def test_gpt_oss_bad_call_arguments_are_an_invalid_call():
    parser = HarmonyParser()
    parser.push("<|channel|>commentary to=functions.add<|message|>{not json<|call|>")
    end = parser.finish()
    assert end.tool_calls == [] and end.invalid_tool_calls[0]["name"] == "add"


# ------------------------------------------------------------------------ tool-call formats
def test_mistral_tool_calls_marker_json_list_and_named_args_form():
    listed = parse_tool_calls('Sure.[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}]')
    assert listed.content == "Sure." and listed.tool_calls[0]["args"] == {"a": 1}
    named = parse_tool_calls('[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]mul[ARGS]{"b": 2}')
    assert [(c["name"], c["args"]) for c in named.tool_calls] == [("add", {"a": 1}), ("mul", {"b": 2})]


def test_llama_python_tag_and_bare_json_with_parameters():
    tagged = parse_tool_calls('<|python_tag|>{"name": "add", "parameters": {"a": 1}}')
    bare = parse_tool_calls('{"name": "add", "parameters": {"a": 1}}', ["add"])
    assert tagged.tool_calls[0]["args"] == bare.tool_calls[0]["args"] == {"a": 1}


# ------------------------------------------------------------------------------ stream filter
def test_splitter_partitions_a_stream_and_counts_reasoning_tokens():
    deltas = [ChatDelta(text=piece) for piece in ["<think>one two", " three</think>", "Four"]]
    deltas.append(ChatDelta(finish_reason="stop", usage=Usage(5, 9)))
    out = list(split_stream(iter(deltas), ReplySplitter(ThinkTagParser(), lambda t: len(t.split()))))
    whole = join_deltas(out)
    assert (whole.reasoning, whole.text) == ("one two three", "Four")
    assert whole.usage is not None and whole.usage.reasoning_tokens == 3


def test_no_reasoning_leaves_the_usage_without_a_reasoning_count():
    deltas = [ChatDelta(text="Paris."), ChatDelta(finish_reason="stop", usage=Usage(5, 2))]
    whole = join_deltas(list(split_stream(iter(deltas), ReplySplitter(ThinkTagParser(), len))))
    assert whole.usage is not None and whole.usage.reasoning_tokens is None
    assert "output_token_details" not in whole.usage.as_usage_metadata()


# ------------------------------------------------------------------------- langchain messages
def test_message_content_is_the_answer_and_the_thinking_rides_along():
    delta = ChatDelta(text="4.", reasoning="2+2", finish_reason="stop", usage=Usage(3, 5, reasoning_tokens=2))
    message = convert_delta_to_message(delta)
    assert message.content == "4." and message.additional_kwargs["reasoning_content"] == "2+2"
    assert message.usage_metadata["output_token_details"] == {"reasoning": 2}
    assert message.content_blocks[0] == {"type": "reasoning", "reasoning": "2+2"}
    assert convert_delta_to_chunk(ChatDelta(reasoning="2+")).additional_kwargs == {"reasoning_content": "2+"}


def test_past_thinking_is_handed_to_the_backend_with_the_message():
    message = AIMessage(content="4.", additional_kwargs={"reasoning_content": "2+2"})
    assert convert_message_to_dict(message)["reasoning_content"] == "2+2"


def test_stream_equals_invoke_and_chunks_carry_the_thinking_as_it_comes():
    chat = ChatHuggingFace(llm=ReplayBackend(["<think>Let", " me think.</think>", "It is ", "4."], "stop"))
    invoked = chat.invoke("2+2?")
    chunks = list(chat.stream("2+2?"))
    streamed = chunks[0]
    for piece in chunks[1:]:
        streamed += piece
    assert streamed.content == invoked.content == "It is 4."
    assert streamed.additional_kwargs["reasoning_content"] == invoked.additional_kwargs["reasoning_content"]
    assert [c.additional_kwargs.get("reasoning_content") for c in chunks[:2]] == ["Let", " me think."]
    assert streamed.usage_metadata["output_token_details"] == invoked.usage_metadata["output_token_details"]


def test_thinking_switch_reaches_the_request():
    seen = []

    class Recording(ReplayBackend):
        def stream_chat(self, request):
            seen.append((request.thinking, request.reasoning_effort))
            return super().stream_chat(request)

    chat = ChatHuggingFace(llm=Recording(["4."]), reasoning_effort="high")
    chat.invoke("2+2?", enable_thinking=False)
    assert seen == [(False, "high")]


# ------------------------------------------------------------------------ endpoint (recorded)
def endpoint_chat(url: str, **kwargs) -> ChatHuggingFace:
    return ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=url, max_new_tokens=32), **kwargs)


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_endpoint_reply_with_a_reasoning_field(recorder, field):
    body = completion("The answer is 4.", **{field: "Two plus two."})
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": 4}
    recorder.default = Reply(body=body)
    message = endpoint_chat(recorder.url).invoke("2+2?")
    assert message.content == "The answer is 4."
    assert message.additional_kwargs["reasoning_content"] == "Two plus two."
    assert message.usage_metadata["output_token_details"] == {"reasoning": 4}


def test_endpoint_reply_with_inline_think_tags(recorder):
    recorder.default = Reply(body=completion("<think>Let me think: two plus two. </think>The answer is 4."))
    message = endpoint_chat(recorder.url).invoke("2+2?")
    assert message.content == "The answer is 4."
    assert message.additional_kwargs["reasoning_content"] == "Let me think: two plus two. "


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_endpoint_stream_with_reasoning_deltas(recorder, field):
    events = [chunk(**{field: "Two "}), chunk(**{field: "plus two."}), chunk("The answer"), chunk(" is 4.")]
    recorder.default = Reply(events=[*events, chunk(finish_reason="stop"), "[DONE]"])
    chunks = list(endpoint_chat(recorder.url).stream("2+2?"))
    assert [c.additional_kwargs.get("reasoning_content") for c in chunks[:2]] == ["Two ", "plus two."]
    whole = chunks[0]
    for piece in chunks[1:]:
        whole += piece
    assert whole.content == "The answer is 4." and whole.additional_kwargs["reasoning_content"] == "Two plus two."


def test_endpoint_stream_with_inline_think_split_across_chunks(recorder):
    pieces = ["<thi", "nk>Let me", " think.</th", "ink>\n\nThe answer", " is 4."]
    recorder.default = Reply(events=[*(chunk(p) for p in pieces), chunk(finish_reason="stop"), "[DONE]"])
    chunks = list(endpoint_chat(recorder.url).stream("2+2?"))
    whole = chunks[0]
    for piece in chunks[1:]:
        whole += piece
    assert whole.content == "The answer is 4." and whole.additional_kwargs["reasoning_content"] == "Let me think."
    assert all("<" not in str(c.content) for c in chunks)


def test_endpoint_async_stream_splits_the_same(recorder):
    pieces = ["<think>Hm", "m.</think>", "Four."]
    recorder.default = Reply(events=[*(chunk(p) for p in pieces), chunk(finish_reason="stop"), "[DONE]"])

    async def collect():
        return [c async for c in endpoint_chat(recorder.url).astream("2+2?")]

    chunks = asyncio.run(collect())
    assert "".join(str(c.content) for c in chunks) == "Four."
    assert "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks) == "Hmm."


def test_endpoint_is_sent_the_thinking_switch_and_no_past_thinking(recorder):
    past = AIMessage(content="4.", additional_kwargs={"reasoning_content": "2+2"})
    endpoint_chat(recorder.url, reasoning_effort="low").invoke(
        [HumanMessage("2+2?"), past, HumanMessage("And 3+3?")], enable_thinking=True
    )
    body = recorder.posts()[0].body
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["reasoning_effort"] == "low"
    assert all("reasoning_content" not in message for message in body["messages"])


def test_endpoint_is_not_sent_thinking_fields_unless_asked(recorder):
    endpoint_chat(recorder.url).invoke("Hi")
    body = recorder.posts()[0].body
    assert "chat_template_kwargs" not in body and "reasoning_effort" not in body


def test_an_unknown_reasoning_effort_is_one_clear_line():
    from hf_magic.errors import InvalidInputError

    with pytest.raises(ValueError, match="reasoning_effort must be one of"):  # pydantic wraps it at construction
        ChatHuggingFace(llm=ReplayBackend(["4."]), reasoning_effort="max")
    with pytest.raises(InvalidInputError, match="reasoning_effort must be one of"):
        ChatHuggingFace(llm=ReplayBackend(["4."])).invoke("2+2?", reasoning_effort="extreme")
