"""HuggingFacePipeline and ChatHuggingFace on the real embedded default model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.messages import AIMessage, FunctionMessage, HumanMessage, SystemMessage, ToolMessage

from hf_magic import ChatHuggingFace, HuggingFacePipeline, InvalidInputError, QuantizationError

pytestmark = pytest.mark.integration

FRANCE = "What is the capital of France?"


def test_invoke_returns_only_the_reply(chat_model):
    reply = chat_model.invoke([SystemMessage("You're a helpful assistant"), HumanMessage(FRANCE)])
    assert reply.content.strip()
    for leak in ("<|im_start|>", "<|im_end|>", "assistant\n", FRANCE):
        assert leak not in reply.content


def test_usage_is_counted_from_token_ids(chat_model, default_llm):
    reply = chat_model.invoke(FRANCE)
    tokenizer = default_llm.tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": FRANCE}], add_generation_prompt=True, tokenize=False
    )
    expected_input = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # The reply's tokens plus the end-of-turn token that ended it.
    expected_output = len(tokenizer(reply.content, add_special_tokens=False)["input_ids"]) + 1
    assert reply.usage_metadata == {
        "input_tokens": expected_input,
        "output_tokens": expected_output,
        "total_tokens": expected_input + expected_output,
    }
    assert reply.response_metadata["model_name"] == "SmolLM2-135M-Instruct"
    assert reply.response_metadata["finish_reason"] == "stop"


def test_stream_matches_invoke_under_greedy_decoding(chat_model):
    chunks = list(chat_model.stream(FRANCE))
    assert len([c for c in chunks if c.content]) > 3, "tokens should arrive one by one"
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == chat_model.invoke(FRANCE).content
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    assert all(c.usage_metadata is None for c in chunks[:-1])


def test_text_completion_returns_only_the_continuation(default_llm):
    text = default_llm.invoke("The capital of France is", max_new_tokens=5)
    assert text and not text.startswith("The capital of France is")


async def test_async_matches_sync_and_does_not_block_the_event_loop(chat_model):
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    reply = await chat_model.ainvoke(FRANCE)
    pieces = [chunk.content async for chunk in chat_model.astream(FRANCE)]
    task.cancel()
    assert reply.content == chat_model.invoke(FRANCE).content == "".join(pieces)
    assert ticks > 5, "the event loop was blocked during generation"


async def test_cancelling_an_async_stream_stops_generation(chat_model):
    expected = (await chat_model.ainvoke(FRANCE, max_tokens=12)).content
    long_request = "Write a long story about a dragon."
    received = []

    async def consume() -> None:
        async for chunk in chat_model.astream(long_request, max_tokens=400):
            received.append(chunk.content)

    task = asyncio.create_task(consume())
    while len(received) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.perf_counter()
    follow_up = await chat_model.ainvoke(FRANCE, max_tokens=12)
    # The model is free again: the cancelled generation did not run on to 400 tokens first.
    assert follow_up.content == expected
    assert time.perf_counter() - started < 10


def test_closing_a_sync_stream_early_frees_the_model(chat_model):
    expected = chat_model.invoke(FRANCE, max_tokens=12).content
    stream = chat_model.stream("Write a long story about a dragon.", max_tokens=400)
    next(stream)
    stream.close()
    assert chat_model.invoke(FRANCE, max_tokens=12).content == expected


def _stop_within(reply: str, words: int) -> str:
    """A stop sequence that occurs in ``reply`` after its first word: ``words`` words from its middle (the reply
    itself comes from this run, so the test holds whatever another CPU's greedy reply is)."""
    parts = reply.split()
    assert len(parts) > words, f"the reply is too short to cut: {reply!r}"
    middle = max(1, len(parts) // 2)
    return " ".join(parts[middle : middle + words])


@pytest.mark.parametrize("words", [1, 2], ids=["one word", "two words"])
def test_stop_sequences_on_invoke_and_stream(chat_model, words):
    full = chat_model.invoke(FRANCE).content
    stop = _stop_within(full, words)
    expected = full[: full.index(stop)]
    assert chat_model.invoke(FRANCE, stop=[stop]).content == expected
    assert "".join(c.content for c in chat_model.stream(FRANCE, stop=[stop])) == expected
    reply = chat_model.invoke(FRANCE, stop=[stop])
    assert reply.response_metadata["finish_reason"] == "stop"
    assert 0 < reply.usage_metadata["output_tokens"] < chat_model.invoke(FRANCE).usage_metadata["output_tokens"]


def test_stop_set_on_the_chat_model_is_honoured(default_llm):
    full = ChatHuggingFace(llm=default_llm).invoke(FRANCE).content
    stop = _stop_within(full, 1)
    chat = ChatHuggingFace(llm=default_llm, stop=[stop])
    assert chat.invoke(FRANCE).content == full[: full.index(stop)]


def test_max_tokens_limits_output_and_reports_length(chat_model):
    reply = chat_model.invoke("Write a poem about the sea.", max_tokens=3)
    assert reply.usage_metadata["output_tokens"] == 3
    assert reply.response_metadata["finish_reason"] == "length"


def test_chat_model_params_are_respected_and_per_call_overrides_win(default_llm):
    chat = ChatHuggingFace(llm=default_llm, temperature=0, max_tokens=40)
    ls = chat._get_ls_params()
    assert ls["ls_temperature"] == 0
    assert ls["ls_model_name"] == "SmolLM2-135M-Instruct"
    assert ls["ls_max_tokens"] == 40
    assert chat.invoke("Write a poem about the sea.", max_tokens=4).usage_metadata["output_tokens"] == 4
    assert chat.invoke(FRANCE).content == chat.invoke(FRANCE).content


def test_seeded_sampling_is_reproducible(default_llm):
    llm = HuggingFacePipeline(pipeline=default_llm.pipeline)
    chat = ChatHuggingFace(llm=llm, temperature=1.2, seed=7, max_tokens=20)
    prompt = "Invent a name for a cat."
    first = chat.invoke(prompt).content
    assert chat.invoke(prompt).content == first
    others = {chat.invoke(prompt, seed=seed).content for seed in (1, 2, 3)}
    assert len(others | {first}) > 1, "sampling with different seeds should vary"


def test_tool_history_is_accepted(chat_model):
    history = [
        HumanMessage("What is the weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}]),
        ToolMessage("18 degrees and sunny", tool_call_id="call_1"),
        HumanMessage("So, what is the weather?"),
    ]
    assert chat_model.invoke(history, max_tokens=20).content


def test_bad_input_gets_one_clear_line(chat_model):
    expected = chat_model.invoke(FRANCE).content
    with pytest.raises(InvalidInputError, match="max_new_tokens must be a positive integer"):
        chat_model.invoke(FRANCE, max_tokens=0)
    with pytest.raises(InvalidInputError, match="No messages"):
        chat_model.invoke([])
    with pytest.raises(InvalidInputError, match="not supported"):
        chat_model.invoke([FunctionMessage(name="f", content="x")])
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        HuggingFacePipeline.from_model_id("default", pipeline_kwargs={"max_new_tokens": -1})
    # Nothing broke: the same model still answers, as before.
    assert chat_model.invoke(FRANCE).content == expected


def test_pipeline_is_exposed_and_can_be_wrapped_again(default_llm):
    assert default_llm.pipeline.model is default_llm.model
    assert default_llm.pipeline.tokenizer is default_llm.tokenizer
    again = HuggingFacePipeline(pipeline=default_llm.pipeline, pipeline_kwargs={"max_new_tokens": 16})
    assert (
        ChatHuggingFace(llm=again).invoke(FRANCE).content
        == ChatHuggingFace(llm=default_llm).invoke(FRANCE, max_tokens=16).content
    )


def test_unrunnable_quantization_is_one_clear_error():
    from transformers import FineGrainedFP8Config

    with pytest.raises(QuantizationError, match="cannot run on this machine"):
        HuggingFacePipeline.from_model_id("default", model_kwargs={"quantization_config": FineGrainedFP8Config()})


def test_four_bit_bitsandbytes_loads_and_answers(default_llm):
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float16", bnb_4bit_use_double_quant=True
    )
    llm4 = HuggingFacePipeline.from_model_id(
        "default",
        task="text-generation",
        pipeline_kwargs=dict(max_new_tokens=24, do_sample=False, repetition_penalty=1.03),
        model_kwargs={"quantization_config": config},
    )
    assert llm4.model.is_loaded_in_4bit
    assert llm4.model.get_memory_footprint() < 0.6 * default_llm.model.get_memory_footprint()
    chat4 = ChatHuggingFace(llm=llm4)
    reply = chat4.invoke(FRANCE)
    assert reply.content.strip() and reply.usage_metadata["output_tokens"] > 0
    assert "".join(chunk.content for chunk in chat4.stream(FRANCE)) == reply.content
