"""KV-cache reuse across turns: prefix logic, leases and resets, and identical replies to a fresh prefill."""

from __future__ import annotations

import threading

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from hf_magic.local.kv_cache import (
    ConversationCache,
    common_prefix_length,
    reusable_length,
    supports_reuse,
    whole_chunks,
)
from tests.support.tiny_models import tiny_causal_lm

pytestmark = pytest.mark.exactness

QUESTIONS = [
    "What is the capital of France?",
    "And of Germany?",
    "Tell me a fact about Berlin.",
    "Write a haiku about rivers.",
    "What is 12 times 7?",
    "Summarize our conversation.",
]


# ------------------------------------------------------------------------------ prefix logic
@pytest.mark.parametrize(
    ("cached", "new", "common", "reusable"),
    [
        ([], [1, 2, 3], 0, 0),
        ([1, 2, 3, 4], [1, 2, 3, 4, 5, 6], 4, 4),  # next turn: prefill only [5, 6]
        ([1, 2, 3, 4], [1, 2, 3, 4, 5], 4, 4),  # one new token: prefilled alone, as a fresh prefill's last chunk is
        ([1, 2, 3, 4], [1, 2, 3, 4], 4, 0),  # same prompt again: one token must still run, so the chunk runs again
        ([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], 8, 4),
        ([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 9, 7, 8, 9], 5, 4),  # history edited mid-chunk: that chunk again
        ([7, 2, 3, 4], [1, 2, 3, 4, 5], 0, 0),  # system prompt changed: full prefill
    ],
)
def test_prefix_lengths_round_down_to_whole_chunks(
    cached: list[int], new: list[int], common: int, reusable: int
) -> None:
    assert common_prefix_length(cached, new) == common
    assert reusable_length(cached, new, chunk=4) == reusable


@pytest.mark.parametrize(("length", "kept"), [(0, 0), (3, 0), (4, 4), (7, 4), (8, 8)])
def test_only_whole_chunks_are_kept(length: int, kept: int) -> None:
    assert whole_chunks(length, 4) == kept


# ------------------------------------------------------------- leases on a tiny real model
CHUNK = 4
"""Small enough that the tiny models' short prompts cross several chunk boundaries."""


def _tiny_model(sliding_window: int | None = None):
    if sliding_window is not None:
        return tiny_causal_lm("Mistral", sliding_window=sliding_window)
    return tiny_causal_lm("Llama")


def _generate(model, store: ConversationCache, ids: list[int], new_tokens: int = 6, reuse: bool = True) -> list[int]:
    """What the pipeline does: take a lease, generate with it, keep it."""
    import torch

    tensor = torch.tensor([ids])
    lease = store.take(model, ids, reuse=reuse)
    with torch.inference_mode():
        output = model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
            **(lease.generate_kwargs() if lease else {}),
        )
    sequence = output.sequences[0].tolist()
    if lease is not None and reuse:
        store.keep(model, lease, sequence, len(ids))
    store.logits = torch.stack(output.logits)  # type: ignore[attr-defined]
    return sequence


def test_take_crops_the_kept_cache_to_the_shared_whole_chunks() -> None:
    model, store = _tiny_model(), ConversationCache(chunk=CHUNK)
    prompt = [1, 5, 7, 9, 11, 13]
    first = _generate(model, store, prompt)
    assert store.cached_tokens == 4  # the partial chunk and the reply, decoded a token at a time, are not kept
    lease = store.take(model, [*first, 11, 12])
    assert lease is not None
    assert lease.reused == 4
    assert lease.cache.get_seq_length() == lease.reused
    assert lease.generate_kwargs()["prefill_chunk_size"] == CHUNK
    assert store.cached_tokens == 0  # taken: a generation that fails leaves nothing stale behind
    _generate(model, store, [1, 5, 7, 9, 10, 2, 3, 4, 5])
    assert store.cached_tokens == 8
    edited = [1, 5, 7, 9, 10, 2, 8, 4, 5]
    assert store.take(model, edited).reused == 4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_continuing_from_the_cache_computes_the_bits_of_a_fresh_prefill(dtype: str) -> None:
    """Every turn's logits, not only its tokens, are identical to a fresh chunked prefill's: the same shapes over
    the same positions, whatever the kernels' rounding."""
    import torch

    model = _tiny_model().to(getattr(torch, dtype))
    store, fresh = ConversationCache(chunk=CHUNK), ConversationCache(chunk=CHUNK)
    ids = [1, 5, 7, 9, 3]
    for turn in range(6):
        cached = _generate(model, store, ids)
        cached_logits = store.logits
        assert cached == _generate(model, fresh, ids, reuse=False)
        assert torch.equal(cached_logits, fresh.logits)
        if turn:
            assert store.last_reused > 0
        ids = [*cached, 20 + turn, 30 + turn, 40 + turn][: len(cached) + 1 + turn % 3]


def test_reset_during_a_generation_drops_its_cache() -> None:
    model, store = _tiny_model(), ConversationCache(chunk=CHUNK)
    lease = store.take(model, [1, 2, 3, 4, 5])
    store.reset()
    store.keep(model, lease, [1, 2, 3, 4, 5, 6], 5)
    assert store.cached_tokens == 0


def test_another_model_never_reuses_the_cache() -> None:
    first, second, store = _tiny_model(), _tiny_model(), ConversationCache(chunk=CHUNK)
    ids = _generate(first, store, [1, 2, 3, 4, 5, 6])
    assert store.cached_tokens > 0
    assert store.take(second, [*ids, 4]).reused == 0


def test_sliding_window_models_are_prefilled_in_full() -> None:
    model = _tiny_model(sliding_window=4)
    assert not supports_reuse(model)
    assert ConversationCache().take(model, [1, 2, 3]) is None


# ------------------------------------------------------------- the real default model
def _wrapper(default_llm, **pipeline_kwargs):
    """Another pipeline over the session's loaded default model (bf16, as users get it), with its own cache."""
    from hf_magic import HuggingFacePipeline

    kwargs = {"max_new_tokens": 24, "do_sample": False, **pipeline_kwargs}
    return HuggingFacePipeline(pipeline=default_llm.pipeline, model_id=default_llm.model_id, pipeline_kwargs=kwargs)


SYSTEM = (
    "You're a helpful assistant. You answer in one or two short sentences, you never make up facts, and when a "
    "question is unclear you say so and ask for what is missing. You know geography, history, arithmetic and "
    "poetry. Keep a friendly tone, avoid jargon, prefer plain words, and do not repeat the question back. When "
    "you are asked to summarize, list the topics of the conversation in the order they came up. When you are "
    "asked for a poem, keep it short. Numbers are written as digits. Names of places are given in English. If "
    "you do not know an answer, say that you do not know, and suggest where the user could look it up instead."
)
"""Long enough (over one prefill chunk, kv_cache.PREFILL_CHUNK) that even the first turns reuse the cache."""


@pytest.fixture
def cached_and_fresh(default_llm):
    """Two chat models on the same loaded model: one keeps its cache, the other is reset before each call."""
    from hf_magic import ChatHuggingFace

    return ChatHuggingFace(llm=_wrapper(default_llm)), ChatHuggingFace(llm=_wrapper(default_llm))


def _fresh_reply(fresh, messages: list[BaseMessage], **kwargs) -> str:
    fresh.llm.reset_cache()
    return fresh.invoke(messages, **kwargs).content


@pytest.mark.integration
def test_system_prompt_is_longer_than_a_prefill_chunk(default_llm) -> None:
    from hf_magic.local.kv_cache import PREFILL_CHUNK

    assert len(default_llm.tokenizer(SYSTEM)["input_ids"]) > PREFILL_CHUNK


@pytest.mark.integration
def test_the_default_dtype_suits_the_cpu(default_llm) -> None:
    """bf16 where the CPU computes it natively, float32 where it would be emulated (the AVX2 run of test.sh)."""
    import torch

    from hf_magic.local.loading import cpu_computes_bf16

    assert default_llm.model.dtype == (torch.bfloat16 if cpu_computes_bf16() else torch.float32)


@pytest.mark.integration
def test_a_repeated_question_gets_the_reply_of_a_fresh_prefill_every_time(default_llm) -> None:
    """The reported fault: asking again reused the cached prompt and prefilled its last tokens alone, which
    rounds unlike a full prefill on some CPUs and flipped the default model's near-tie first token."""
    from hf_magic import ChatHuggingFace, HuggingFacePipeline

    messages = [SystemMessage(content=SYSTEM), HumanMessage(content=QUESTIONS[0])]
    cached = ChatHuggingFace(llm=_wrapper(default_llm))
    replies = []
    for _ in range(3):
        replies.append(cached.invoke(messages).content)
        assert cached.llm._kv_cache.cached_tokens > 0
    assert cached.llm._kv_cache.last_reused > 0
    without_reuse = HuggingFacePipeline(
        pipeline=default_llm.pipeline, pipeline_kwargs=cached.llm.pipeline_kwargs, reuse_kv_cache=False
    )
    assert replies == [ChatHuggingFace(llm=without_reuse).invoke(messages).content] * 3


@pytest.mark.integration
def test_replies_with_cache_reuse_equal_fresh_prefills_over_several_turns(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    messages: list[BaseMessage] = [SystemMessage(content=SYSTEM)]
    for turn, question in enumerate(QUESTIONS * 2):
        messages.append(HumanMessage(content=question))
        reply = cached.invoke(messages)
        if turn:
            assert cached.llm._kv_cache.last_reused > 0, "the previous turn's cache was not reused"
        assert reply.content == _fresh_reply(fresh, messages)
        messages.append(AIMessage(content=reply.content))
    # One conversation cache, no larger than the conversation itself.
    assert cached.llm._kv_cache.cached_tokens <= reply.usage_metadata["total_tokens"]


@pytest.mark.integration
def test_edited_history_and_changed_system_prompt_fall_back_to_what_a_fresh_prefill_gives(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    base = [SystemMessage(content=SYSTEM), HumanMessage(content=QUESTIONS[0])]
    first = cached.invoke(base).content
    follow = [*base, AIMessage(content=first), HumanMessage(content=QUESTIONS[1])]
    cached.invoke(follow)
    edited = [*base, AIMessage(content="Paris."), HumanMessage(content=QUESTIONS[2])]
    assert cached.invoke(edited).content == _fresh_reply(fresh, edited)
    rerun = list(edited)  # the same cell again: all whole chunks come from the cache
    assert cached.invoke(rerun).content == _fresh_reply(fresh, rerun)
    new_system = [SystemMessage(content="Answer like a pirate"), *edited[1:]]
    assert cached.invoke(new_system).content == _fresh_reply(fresh, new_system)


@pytest.mark.integration
def test_a_stopped_stream_leaves_a_cache_the_next_turn_can_use(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    messages: list[BaseMessage] = [SystemMessage(content=SYSTEM), HumanMessage(content="Hi!")]
    cached.invoke(messages)
    messages += [AIMessage(content="Hello! How can I help?"), HumanMessage(content=QUESTIONS[3])]
    stream = cached.stream(messages)
    partial = next(stream).content
    stream.close()  # the Stop button: generation ends at the next token
    messages += [AIMessage(content=partial), HumanMessage(content=QUESTIONS[4])]
    assert cached.invoke(messages).content == _fresh_reply(fresh, messages)


@pytest.mark.integration
def test_a_failed_generation_drops_the_cache(default_llm) -> None:
    from hf_magic.backend import GenerationParams

    llm = _wrapper(default_llm)

    def failing_processor(input_ids, scores):
        raise RuntimeError("boom")

    prompt = f"{SYSTEM} The capital of France is"
    llm.invoke(prompt)
    assert llm._kv_cache.cached_tokens > 0
    ids = llm.tokenizer(prompt)["input_ids"]
    with pytest.raises(RuntimeError, match="boom"):
        list(llm._stream_ids(ids, GenerationParams(max_new_tokens=4), [failing_processor]))
    assert llm._kv_cache.cached_tokens == 0


@pytest.mark.integration
def test_sampling_with_a_seed_and_constrained_decoding_match_fresh_prefills(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    messages: list[BaseMessage] = [SystemMessage(content=SYSTEM), HumanMessage(content="Hi!")]
    messages.append(AIMessage(content=cached.invoke(messages).content))
    messages.append(HumanMessage(content="Give me a person as JSON with a name and an age."))
    sampled = cached.invoke(messages, temperature=0.9, seed=7).content
    assert sampled == _fresh_reply(fresh, messages, temperature=0.9, seed=7)
    json_mode = {"response_format": {"type": "json_object"}}
    assert cached.invoke(messages, **json_mode).content == _fresh_reply(fresh, messages, **json_mode)


@pytest.mark.integration
def test_concurrent_conversations_on_one_pipeline_each_get_their_fresh_prefill_reply(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    conversations = [[SystemMessage(content=SYSTEM), HumanMessage(content=question)] for question in QUESTIONS[:3]]
    results: dict[int, str] = {}

    def ask(index: int) -> None:
        results[index] = cached.invoke(conversations[index]).content

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(conversations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(conversations))] == [_fresh_reply(fresh, c) for c in conversations]


@pytest.mark.integration
def test_reset_cache_forgets_the_conversation(cached_and_fresh) -> None:
    cached, _ = cached_and_fresh
    cached.invoke([SystemMessage(content=SYSTEM), HumanMessage(content=QUESTIONS[0])])
    assert cached.llm._kv_cache.cached_tokens > 0
    cached.llm.reset_cache()
    assert cached.llm._kv_cache.cached_tokens == 0


@pytest.mark.integration
def test_quantized_model_reuses_the_cache_with_fresh_prefill_replies() -> None:
    import torch
    from transformers import BitsAndBytesConfig

    from hf_magic import ChatHuggingFace, HuggingFacePipeline

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    llm = HuggingFacePipeline.from_model_id(
        "default",
        model_kwargs={"quantization_config": quantization},
        pipeline_kwargs={"max_new_tokens": 12, "do_sample": False},
    )
    cached = ChatHuggingFace(llm=llm)
    fresh = ChatHuggingFace(
        llm=HuggingFacePipeline(pipeline=llm.pipeline, model_id=llm.model_id, pipeline_kwargs=llm.pipeline_kwargs)
    )
    messages: list[BaseMessage] = [SystemMessage(content=SYSTEM)]
    for turn, question in enumerate(QUESTIONS[:3]):
        messages.append(HumanMessage(content=question))
        reply = cached.invoke(messages).content
        if turn:
            assert llm._kv_cache.last_reused > 0
        assert reply == _fresh_reply(fresh, messages)
        messages.append(AIMessage(content=reply))
