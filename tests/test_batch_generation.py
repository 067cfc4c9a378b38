"""Batched local generation (local/batch_generation.py through HuggingFacePipeline.batch_chat): one reply per
request, each its own row's up to rounding, errors per row, grammar per row, stopping. A tiny random-weight model
with the default model's real tokenizer runs the mechanics in seconds; the default model runs the real thing."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from hf_magic import ChatHuggingFace, HuggingFacePipeline
from hf_magic.backend import ChatDelta, ChatRequest, GenerationParams
from hf_magic.errors import ContextWindowError, HfMagicError
from hf_magic.local.batch_generation import BatchGenerator, BatchReply, batches
from hf_magic.local.pipeline import LoadedModel
from hf_magic.structured_output import json_schema_format
from tests.support.tiny_models import tiny_causal_lm

ROWS = ["rivers", "a very long question about volcanoes and their ash", "bees", "the moon and its phases", "owls"]


class Label(BaseModel):
    sentiment: str
    score: int


@pytest.fixture(scope="module")
def tiny_llm() -> HuggingFacePipeline:
    """A 2-layer random Llama over the default model's tokenizer (so prompts, templates and grammars are real)."""
    from transformers import AutoTokenizer

    from hf_magic.local.loading import ensure_default_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    model = tiny_causal_lm("Llama", vocab_size=len(tokenizer), max_position_embeddings=96)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return HuggingFacePipeline(pipeline=LoadedModel(model, tokenizer), model_id="tiny-random")


def requests_for(rows: list[str], **params: Any) -> list[ChatRequest]:
    settings = GenerationParams(**{"max_new_tokens": 8, "temperature": 0, **params})
    return [
        ChatRequest(messages=[{"role": "user", "content": f"Tell me about {row}."}], params=settings) for row in rows
    ]


def batch_of(llm: HuggingFacePipeline, requests: list[ChatRequest], batch_size: int) -> dict[int, BatchReply]:
    """The rows of ``requests`` through ``BatchGenerator`` itself, with the token ids each row was given."""
    params = llm.default_params().merged(requests[0].params)
    generator = llm._generator()
    batcher = BatchGenerator(llm.model, llm.tokenizer, llm.model_name, generator.model_lock)
    prompts = [llm._chat_input_ids(request) for request in requests]
    replies = batcher.generate(prompts, params, generator._generate_kwargs(params), batch_size=batch_size)
    return {reply.index: reply for reply in replies}


def largest_gap_to_the_top(llm: HuggingFacePipeline, request: ChatRequest, token_ids: list[int]) -> float:
    """Fed the batched reply, how far (in logits) the row alone ranks the batched tokens below its top token."""
    import torch

    prompt = llm._chat_input_ids(request)
    with torch.inference_mode():
        logits = llm.model(torch.tensor([prompt + token_ids])).logits[0, len(prompt) - 1 : -1].float()
    chosen = logits.gather(1, torch.tensor(token_ids)[:, None])[:, 0]
    return float((logits.max(dim=1).values - chosen).max())


def test_batches_group_prompts_of_similar_length_within_rows_and_tokens():
    lengths = [50, 10, 400, 12, 3000, 11, 60]
    assert batches(lengths, batch_size=3, token_budget=1000) == [[1, 5, 3], [0, 6], [2], [4]]
    assert sorted(index for chunk in batches(lengths, 2) for index in chunk) == list(range(len(lengths)))


def test_one_reply_per_request_and_each_row_its_own(tiny_llm):
    requests = requests_for(ROWS)
    batched = dict(tiny_llm.batch_chat(requests, batch_size=3))
    assert sorted(batched) == list(range(len(ROWS)))
    for index, request in enumerate(requests):
        reply, alone = batched[index], tiny_llm.chat(request)
        assert isinstance(reply, ChatDelta) and reply.finish_reason in ("stop", "length")
        assert reply.usage is not None and alone.usage is not None
        assert reply.usage.input_tokens == alone.usage.input_tokens  # the same prompt; padding is not counted


@pytest.mark.exactness  # scripts/test.sh runs these again under other CPUs' kernels
def test_each_batched_token_is_the_rows_top_token_up_to_rounding(tiny_llm):
    requests = requests_for(ROWS)
    for index, reply in batch_of(tiny_llm, requests, batch_size=3).items():
        assert reply.token_ids and largest_gap_to_the_top(tiny_llm, requests[index], reply.token_ids) <= 1e-4


@pytest.mark.exactness  # scripts/test.sh runs these again under other CPUs' kernels
def test_the_same_batch_twice_gives_the_same_replies(tiny_llm):
    requests = requests_for(ROWS)
    first = {index: reply.token_ids for index, reply in batch_of(tiny_llm, requests, batch_size=2).items()}
    assert first == {index: reply.token_ids for index, reply in batch_of(tiny_llm, requests, batch_size=2).items()}


def test_a_row_over_the_context_window_fails_alone(tiny_llm):
    rows = ["owls", "word " * 200, "bees"]
    replies = dict(tiny_llm.batch_chat(requests_for(rows), batch_size=4))
    assert isinstance(replies[1], ContextWindowError)
    assert isinstance(replies[0], ChatDelta) and isinstance(replies[2], ChatDelta)


def test_every_row_of_a_batch_is_held_to_the_schema(tiny_llm):
    # Random weights: only the grammar makes these JSON. Its matchers are per row, so each row is held on its own.
    requests = requests_for(ROWS, max_new_tokens=40)
    for request in requests:
        request.response_format = json_schema_format(Label)
    replies = dict(tiny_llm.batch_chat(requests, batch_size=5))
    for reply in replies.values():
        assert isinstance(reply, ChatDelta)
        Label.model_validate(json.loads(reply.text))


def test_stop_sequences_end_each_row_on_its_own(tiny_llm):
    requests = requests_for(ROWS, max_new_tokens=12)
    free = dict(tiny_llm.batch_chat(requests, batch_size=5))
    # A stop string taken from one row's free reply: that row ends before it, the others are untouched by it.
    victim = next(index for index, reply in free.items() if len(reply.text.strip()) > 4)
    stop = free[victim].text.strip()[2:4]
    stopped = dict(tiny_llm.batch_chat(requests_for(ROWS, max_new_tokens=12, stop=(stop,)), batch_size=5))
    for index, reply in stopped.items():
        assert stop not in reply.text
        assert free[index].text.startswith(reply.text)
    assert stopped[victim].finish_reason == "stop" and len(stopped[victim].text) < len(free[victim].text)


def test_cancel_stops_at_the_next_token_and_keeps_what_was_handed_back(tiny_llm):
    cancel = threading.Event()
    got: dict[int, Any] = {}
    for index, reply in tiny_llm.batch_chat(requests_for(ROWS * 2, max_new_tokens=6), batch_size=2, cancel=cancel):
        got[index] = reply
        cancel.set()  # after the first row: nothing more comes back
    assert 1 <= len(got) <= 2  # the rest of the first row's batch may already have ended with it
    assert not tiny_llm._generator().model_lock.locked()


def test_closing_the_iterator_releases_the_model(tiny_llm):
    replies = tiny_llm.batch_chat(requests_for(ROWS, max_new_tokens=6), batch_size=2)
    next(iter(replies))
    replies.close()  # type: ignore[attr-defined]
    assert not tiny_llm._generator().model_lock.locked()
    assert tiny_llm.chat(requests_for(["owls"])[0]).text is not None  # the model is free for the next reply


def test_chat_model_batch_deltas_takes_the_settings_of_invoke(tiny_llm):
    chat = ChatHuggingFace(llm=tiny_llm)
    conversations = [[HumanMessage(content=f"About {row}")] for row in ROWS]
    replies = dict(chat.batch_deltas(conversations, concurrency=2, max_tokens=3, temperature=0))
    assert len(replies) == len(ROWS)
    assert all(
        isinstance(reply, ChatDelta) and reply.usage and reply.usage.output_tokens <= 3 for reply in replies.values()
    )


# ------------------------------------------------------------------------------ the real model
@pytest.mark.integration
@pytest.mark.exactness
def test_batched_rows_of_the_default_model_are_their_own_replies(default_llm):
    rows = ["great product, works well", "broke after a day", "it is fine", "terrible support", "I love it"]
    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": f"Is this review positive or negative? Review: {row}"}],
            params=GenerationParams(max_new_tokens=12, temperature=0),
        )
        for row in rows
    ]
    # fp32 (this CPU) rounds finely; bf16 (CPUs with native bf16) coarsely: a near tie may go either way by that much.
    tol = 1e-3 if str(default_llm.model.dtype) == "torch.float32" else 1.0
    for index, reply in batch_of(default_llm, requests, batch_size=len(rows)).items():
        assert reply.delta.text.strip()
        assert largest_gap_to_the_top(default_llm, requests[index], reply.token_ids) <= tol


@pytest.mark.integration
def test_the_default_model_fills_a_schema_for_every_row_of_a_batch(default_llm):
    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": f"Review: {row}. Give its sentiment and a score from 1 to 5."}],
            params=GenerationParams(max_new_tokens=40, temperature=0),
            response_format=json_schema_format(Label),
        )
        for row in ("great product", "broke after a day", "it is fine")
    ]
    for _, reply in default_llm.batch_chat(requests, batch_size=3):
        assert not isinstance(reply, HfMagicError)
        Label.model_validate(json.loads(reply.text))
