"""Local reasoning models of each family: prompts with their chat templates (tests/data/chat_templates), replies
parsed into thinking, answer and tool calls. Known token streams go through the real decoding (scripted
generation); tiny random-weight models and the default model check the mechanics on real generation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from hf_magic import ChatHuggingFace
from hf_magic.backend import ChatRequest
from hf_magic.local.harmony import HarmonyParser
from hf_magic.local.reply_format import TemplateReplyParser, reply_parser_for, thinking_template_kwargs
from hf_magic.reasoning import ThinkTagParser
from tests.support.reasoning_models import (
    THINK_RESPONSE_TEMPLATE,
    family_tokenizer,
    prewritten_think_tokenizer,
    script_replies,
    tiny_chat_llm,
)
from tests.test_tool_calls import WEATHER

# Each family's reply: thinking "Rain likely.", then a call of get_weather(city="Paris").
SCRIPTS = {
    "qwen3_style": '<think>\nRain likely.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
    '{"city": "Paris"}}\n</tool_call>',
    "r1_style": 'Rain likely.</think>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "gpt_oss_style": "<|channel|>analysis<|message|>Rain likely.<|end|><|start|>assistant<|channel|>commentary "
    'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>',
    "mistral_style": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    "llama3_style": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
}
THINKS = {"qwen3_style", "r1_style", "gpt_oss_style"}


@pytest.fixture(scope="module")
def llms() -> dict[str, Any]:
    """One tiny random-weight model per family, built once (greedy, 24 new tokens)."""
    return {family: tiny_chat_llm(family_tokenizer(family)) for family in SCRIPTS}


def whole(chunks: list[Any]) -> Any:
    total = chunks[0]
    for piece in chunks[1:]:
        total += piece
    return total


# ------------------------------------------------------------------------------ known streams
@pytest.mark.parametrize("family", sorted(SCRIPTS))
def test_each_family_reply_is_split_into_thinking_and_a_tool_call(llms, monkeypatch, family):
    llm = llms[family]
    script_replies(llm, monkeypatch, SCRIPTS[family])
    chat = ChatHuggingFace(llm=llm, max_new_tokens=80).bind_tools([WEATHER])
    message = chat.invoke("Weather in Paris?")
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert message.content == ""
    thought = message.additional_kwargs.get("reasoning_content", "")
    assert thought.strip() == ("Rain likely." if family in THINKS else "")
    assert message.response_metadata["finish_reason"] == "tool_calls"
    streamed = whole(list(chat.stream("Weather in Paris?")))
    assert streamed.additional_kwargs.get("reasoning_content") == message.additional_kwargs.get("reasoning_content")
    assert [c["args"] for c in streamed.tool_calls] == [{"city": "Paris"}]


@pytest.mark.parametrize("family", ["qwen3_style", "r1_style", "gpt_oss_style"])
def test_thinking_then_an_answer_streams_the_thinking_first(llms, monkeypatch, family):
    reply = {
        "qwen3_style": "<think>Two plus two.</think>\n\nIt is 4.",
        "r1_style": "Two plus two.</think>\n\nIt is 4.",
        "gpt_oss_style": "<|channel|>analysis<|message|>Two plus two.<|end|><|start|>assistant<|channel|>final"
        "<|message|>It is 4.",
    }[family]
    script_replies(llms[family], monkeypatch, reply)
    chunks = list(ChatHuggingFace(llm=llms[family], max_new_tokens=80).stream("2+2?"))
    kinds = ["thinking" if c.additional_kwargs.get("reasoning_content") else "answer" for c in chunks if c.text or
             c.additional_kwargs.get("reasoning_content")]  # fmt: skip
    assert kinds == sorted(kinds, key=lambda kind: kind != "thinking") and "answer" in kinds
    total = whole(chunks)
    assert (total.additional_kwargs["reasoning_content"], total.content) == ("Two plus two.", "It is 4.")
    assert 0 < total.usage_metadata["output_token_details"]["reasoning"] <= total.usage_metadata["output_tokens"]


def test_thinking_cut_by_the_token_limit_is_all_thinking_and_no_answer(llms, monkeypatch):
    script_replies(llms["qwen3_style"], monkeypatch, "<think>" + "step " * 40 + "</think>Done.")
    message = ChatHuggingFace(llm=llms["qwen3_style"]).invoke("Go", max_new_tokens=10)
    assert message.content == "" and message.additional_kwargs["reasoning_content"].startswith("step")
    assert message.response_metadata["finish_reason"] == "length"


def test_stopping_a_stream_while_it_thinks_keeps_what_came(llms, monkeypatch):
    script_replies(llms["qwen3_style"], monkeypatch, "<think>" + "step " * 20 + "</think>Done.")
    stream = ChatHuggingFace(llm=llms["qwen3_style"]).stream("Go")
    first = [next(stream) for _ in range(3)]
    stream.close()
    assert all(c.content == "" for c in first)
    assert "step" in "".join(c.additional_kwargs["reasoning_content"] for c in first)


def test_async_stream_splits_like_the_sync_one(llms, monkeypatch):
    script_replies(llms["gpt_oss_style"], monkeypatch, SCRIPTS["gpt_oss_style"])
    chat = ChatHuggingFace(llm=llms["gpt_oss_style"], max_new_tokens=80).bind_tools([WEATHER])

    async def collect() -> list[Any]:
        return [c async for c in chat.astream("Weather?")]

    total = whole(asyncio.run(collect()))
    assert total.additional_kwargs["reasoning_content"] == "Rain likely."
    assert [c["args"] for c in total.tool_calls] == [{"city": "Paris"}]


# ------------------------------------------------------------------------- random-weight models
@pytest.mark.parametrize("family", sorted(SCRIPTS))
def test_random_model_stream_equals_invoke_and_the_parts_partition_the_text(llms, family):
    llm = llms[family]
    chat = ChatHuggingFace(llm=llm)
    invoked = chat.invoke("Hi")
    streamed = whole(list(chat.stream("Hi")))
    thought = invoked.additional_kwargs.get("reasoning_content", "")
    assert (streamed.content, streamed.additional_kwargs.get("reasoning_content", "")) == (invoked.content, thought)
    prompt = llm.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                               tokenize=False)  # fmt: skip
    raw = llm.invoke(prompt, add_special_tokens=False)  # the same greedy tokens, unparsed
    if family == "gpt_oss_style" or not thought:
        return  # channel markers are special tokens (skipped in raw), and a reply with no thinking is the text
    assert raw.startswith(thought.lstrip("<think>")) or thought in raw
    assert raw.replace(thought, "", 1).replace("</think>", "", 1).strip() == str(invoked.content).strip()


def test_prewritten_think_makes_a_random_model_reply_thinking_until_it_closes(llms):
    llm = llms["r1_style"]
    message = ChatHuggingFace(llm=llm).invoke("Hi")
    # The model cannot write a second <think>: whatever it writes is thinking unless it wrote </think>.
    assert message.additional_kwargs["reasoning_content"]
    if message.response_metadata["finish_reason"] == "length" and not message.content:
        assert message.usage_metadata["output_token_details"]["reasoning"] <= message.usage_metadata["output_tokens"]


def test_enable_thinking_false_reaches_the_template_and_the_reply_is_all_answer(llms, monkeypatch):
    llm = llms["qwen3_style"]
    prompts = script_replies(llm, monkeypatch, "It is 4.")
    ChatHuggingFace(llm=llm).invoke("2+2?", enable_thinking=False)
    ChatHuggingFace(llm=llm).invoke("2+2?")
    off, default = (llm.tokenizer.decode(ids) for ids in prompts)
    assert off.endswith("<think>\n\n</think>\n\n") and not default.rstrip().endswith("</think>")


def test_reasoning_effort_reaches_the_gpt_oss_template(llms, monkeypatch):
    llm = llms["gpt_oss_style"]
    prompts = script_replies(llm, monkeypatch, "<|channel|>final<|message|>Hi.")
    ChatHuggingFace(llm=llm, reasoning_effort="high").invoke("Hi")
    ChatHuggingFace(llm=llm).invoke("Hi", enable_thinking=False)
    high, off = (llm.tokenizer.decode(ids) for ids in prompts)
    assert "Reasoning: high" in high and "Reasoning: low" in off


def test_past_thinking_is_dropped_by_a_template_that_drops_it(llms, monkeypatch):
    llm = llms["qwen3_style"]
    prompts = script_replies(llm, monkeypatch, "Ok.")
    past = AIMessage(content="It is 4.", additional_kwargs={"reasoning_content": "SECRET-THOUGHT"})
    ChatHuggingFace(llm=llm).invoke([HumanMessage("2+2?"), past, HumanMessage("Thanks")])
    prompt = llm.tokenizer.decode(prompts[0])
    assert "It is 4." in prompt and "SECRET-THOUGHT" not in prompt


def test_thinking_kwargs_only_for_templates_that_read_them():
    qwen, plain = family_tokenizer("qwen3_style"), family_tokenizer("llama3_style")
    request = ChatRequest(messages=[], thinking=True)
    assert thinking_template_kwargs(qwen, request) == {"enable_thinking": True}
    assert thinking_template_kwargs(plain, request) == {}


# ------------------------------------------------------------------------- parser selection
def test_parser_follows_the_template():
    assert isinstance(reply_parser_for(family_tokenizer("gpt_oss_style"), "<|start|>assistant"), HarmonyParser)
    prewritten = reply_parser_for(family_tokenizer("r1_style"), "<|Assistant|><think>\n")
    assert isinstance(prewritten, ThinkTagParser) and prewritten.thinking
    assert not reply_parser_for(family_tokenizer("qwen3_style"), "<|im_start|>assistant\n").thinking  # type: ignore[attr-defined]


def test_a_tokenizer_with_a_response_template_is_read_by_transformers(llms, monkeypatch):
    tokenizer = family_tokenizer("qwen3_style")
    tokenizer.response_template = THINK_RESPONSE_TEMPLATE
    llm = tiny_chat_llm(tokenizer)
    assert isinstance(reply_parser_for(tokenizer, "<|im_start|>assistant\n"), TemplateReplyParser)
    script_replies(llm, monkeypatch, SCRIPTS["qwen3_style"])
    with_template = ChatHuggingFace(llm=llm, max_new_tokens=80).bind_tools([WEATHER]).invoke("Weather in Paris?")
    script_replies(llms["qwen3_style"], monkeypatch, SCRIPTS["qwen3_style"])
    own = ChatHuggingFace(llm=llms["qwen3_style"], max_new_tokens=80).bind_tools([WEATHER]).invoke("Weather in Paris?")
    assert with_template.additional_kwargs["reasoning_content"].strip() == "Rain likely."
    assert with_template.additional_kwargs["reasoning_content"] == own.additional_kwargs["reasoning_content"]
    assert [(c["name"], c["args"]) for c in with_template.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_response_template_answer_streams_the_same_as_invoke(monkeypatch):
    tokenizer = family_tokenizer("qwen3_style")
    tokenizer.response_template = THINK_RESPONSE_TEMPLATE
    llm = tiny_chat_llm(tokenizer)
    script_replies(llm, monkeypatch, "<think>Two plus two.</think>\n\nIt is 4.")
    chat = ChatHuggingFace(llm=llm, max_new_tokens=80)
    invoked = chat.invoke("2+2?")
    streamed = whole(list(chat.stream("2+2?")))
    assert invoked.content.strip() == streamed.content.strip() == "It is 4."
    assert invoked.additional_kwargs["reasoning_content"] == streamed.additional_kwargs["reasoning_content"]


# ---------------------------------------------------------------------------- default model
@pytest.mark.integration
def test_default_model_with_a_template_that_prewrites_think(default_llm):
    from transformers import pipeline

    from hf_magic import HuggingFacePipeline

    tokenizer = prewritten_think_tokenizer()
    pipe = pipeline("text-generation", model=default_llm.model, tokenizer=tokenizer, device=default_llm.model.device)
    llm = HuggingFacePipeline(pipeline=pipe, pipeline_kwargs={"max_new_tokens": 24, "do_sample": False})
    chat = ChatHuggingFace(llm=llm)
    invoked = chat.invoke("What is 2+2?")
    streamed = whole(list(chat.stream("What is 2+2?")))
    thought = invoked.additional_kwargs["reasoning_content"]
    assert thought and thought == streamed.additional_kwargs["reasoning_content"]
    assert invoked.content == streamed.content
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                           tokenize=False)  # fmt: skip
    raw = llm.invoke(prompt, add_special_tokens=False)
    assert raw.startswith(thought)  # everything the model wrote is thinking until it writes </think>
    assert raw[len(thought) :].replace("</think>", "", 1).strip() == invoked.content.strip()
