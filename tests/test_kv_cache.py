"""KV-cache reuse across turns: prefix logic, leases and resets, and identical replies to a fresh prefill."""

from __future__ import annotations

import threading

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from hf_magic.kv_cache import ConversationCache, common_prefix_length, reusable_length, supports_reuse
from tests.support.tiny_models import tiny_causal_lm

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
        ([1, 2, 3], [1, 2, 3, 4, 5], 3, 3),  # next turn: prefill only [4, 5]
        ([1, 2, 3], [1, 2, 3, 4], 3, 2),  # one new token: prefill it with the one before, never alone
        ([1, 2, 3, 4], [1, 2, 3], 3, 1),  # same prompt again: two tokens must still run
        ([1, 2, 9, 4, 5], [1, 2, 3, 4, 5], 2, 2),  # history edited in the middle
        ([7, 2, 3], [1, 2, 3], 0, 0),  # system prompt changed: full prefill
        ([1], [1], 1, 0),  # too short to reuse anything
    ],
)
def test_prefix_lengths(cached: list[int], new: list[int], common: int, reusable: int) -> None:
    assert common_prefix_length(cached, new) == common
    assert reusable_length(cached, new) == reusable


# ------------------------------------------------------------- leases on a tiny real model
def _tiny_model(sliding_window: int | None = None):
    if sliding_window is not None:
        return tiny_causal_lm("Mistral", sliding_window=sliding_window)
    return tiny_causal_lm("Llama")


def _generate(model, store: ConversationCache | None, ids: list[int], new_tokens: int = 6) -> list[int]:
    import torch

    tensor = torch.tensor([ids])
    lease = store.take(model, ids) if store is not None else None
    with torch.inference_mode():
        output = model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
            **(lease.generate_kwargs() if lease else {}),
        )
    sequence = output[0].tolist()
    if store is not None and lease is not None:
        store.keep(model, lease, sequence, len(ids))
    return sequence


def test_take_crops_the_kept_cache_to_the_shared_prefix() -> None:
    model, store = _tiny_model(), ConversationCache()
    prompt = [1, 5, 7, 9]
    first = _generate(model, store, prompt)
    assert store.cached_tokens == len(prompt)  # the reply, decoded a token at a time, is not kept
    lease = store.take(model, [*first, 11, 12])
    assert lease is not None
    assert lease.reused == len(prompt)
    assert lease.cache.get_seq_length() == lease.reused
    assert store.cached_tokens == 0  # taken: a generation that fails leaves nothing stale behind
    _generate(model, store, [1, 5, 7, 9, 10])
    edited = [1, 5, 8, 9, 10]
    assert store.take(model, edited).reused == 2


def test_continuing_from_the_cache_generates_what_a_fresh_prefill_does() -> None:
    model, store = _tiny_model(), ConversationCache()
    ids = [1, 5, 7, 9]
    for turn in range(4):
        cached = _generate(model, store, ids)
        assert cached == _generate(model, None, ids)
        if turn:
            assert store.last_reused > 0
        ids = [*cached, 20 + turn, 30 + turn]


def test_a_conversation_keeps_appending_to_the_same_buffers() -> None:
    """Turn after turn, the cache is cropped and extended in place: no copy of the context per token or turn."""
    model, store = _tiny_model(), ConversationCache()
    ids = [1, 5, 7, 9]
    storages = set()
    for turn in range(4):
        sequence = _generate(model, store, ids)
        lease = store.take(model, [*sequence, 40, 41])
        assert lease is not None and lease.reused
        storages |= {layer.keys.untyped_storage().data_ptr() for layer in lease.cache.layers[:1]}
        store.keep(model, lease, sequence, len(ids))  # hand it back untouched
        ids = [*sequence, 20 + turn, 30 + turn]
    assert len(storages) == 1


def test_reset_during_a_generation_drops_its_cache() -> None:
    model, store = _tiny_model(), ConversationCache()
    lease = store.take(model, [1, 2, 3])
    store.reset()
    store.keep(model, lease, [1, 2, 3, 4], 3)
    assert store.cached_tokens == 0


def test_another_model_never_reuses_the_cache() -> None:
    first, second, store = _tiny_model(), _tiny_model(), ConversationCache()
    ids = _generate(first, store, [1, 2, 3])
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


@pytest.fixture
def cached_and_fresh(default_llm):
    """Two chat models on the same loaded model: one keeps its cache, the other is reset before each call."""
    from hf_magic import ChatHuggingFace
    from hf_magic.attention import ATTENTION_NAME

    assert default_llm.model.config._attn_implementation == ATTENTION_NAME
    return ChatHuggingFace(llm=_wrapper(default_llm)), ChatHuggingFace(llm=_wrapper(default_llm))


def _fresh_reply(fresh, messages: list[BaseMessage], **kwargs) -> str:
    fresh.llm.reset_cache()
    return fresh.invoke(messages, **kwargs).content


@pytest.mark.integration
def test_replies_with_cache_reuse_equal_fresh_prefills_over_several_turns(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    messages: list[BaseMessage] = [SystemMessage(content="You're a helpful assistant")]
    for turn, question in enumerate(QUESTIONS * 2):  # bf16: before split-invariant attention, 1 turn in 8 differed
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
    base = [SystemMessage(content="You're a helpful assistant"), HumanMessage(content=QUESTIONS[0])]
    first = cached.invoke(base).content
    follow = [*base, AIMessage(content=first), HumanMessage(content=QUESTIONS[1])]
    cached.invoke(follow)
    edited = [*base, AIMessage(content="Paris."), HumanMessage(content=QUESTIONS[2])]
    assert cached.invoke(edited).content == _fresh_reply(fresh, edited)
    rerun = list(edited)  # the same cell again: everything but the last token comes from the cache
    assert cached.invoke(rerun).content == _fresh_reply(fresh, rerun)
    new_system = [SystemMessage(content="Answer like a pirate"), *edited[1:]]
    assert cached.invoke(new_system).content == _fresh_reply(fresh, new_system)


@pytest.mark.integration
def test_a_stopped_stream_leaves_a_cache_the_next_turn_can_use(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    messages: list[BaseMessage] = [SystemMessage(content="You're a helpful assistant"), HumanMessage(content="Hi!")]
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

    llm.invoke("The capital of France is")
    assert llm._kv_cache.cached_tokens > 0
    ids = llm.tokenizer("The capital of France is")["input_ids"]
    with pytest.raises(RuntimeError, match="boom"):
        list(llm._stream_ids(ids, GenerationParams(max_new_tokens=4), [failing_processor]))
    assert llm._kv_cache.cached_tokens == 0


@pytest.mark.integration
def test_sampling_with_a_seed_and_constrained_decoding_match_fresh_prefills(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    messages: list[BaseMessage] = [SystemMessage(content="You're a helpful assistant"), HumanMessage(content="Hi!")]
    messages.append(AIMessage(content=cached.invoke(messages).content))
    messages.append(HumanMessage(content="Give me a person as JSON with a name and an age."))
    sampled = cached.invoke(messages, temperature=0.9, seed=7).content
    assert sampled == _fresh_reply(fresh, messages, temperature=0.9, seed=7)
    json_mode = {"response_format": {"type": "json_object"}}
    assert cached.invoke(messages, **json_mode).content == _fresh_reply(fresh, messages, **json_mode)


@pytest.mark.integration
def test_concurrent_conversations_on_one_pipeline_each_get_their_fresh_prefill_reply(cached_and_fresh) -> None:
    cached, fresh = cached_and_fresh
    conversations = [
        [SystemMessage(content="You're a helpful assistant"), HumanMessage(content=question)]
        for question in QUESTIONS[:3]
    ]
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
    cached.invoke([HumanMessage(content=QUESTIONS[0])])
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
    messages: list[BaseMessage] = [SystemMessage(content="You're a helpful assistant")]
    for turn, question in enumerate(QUESTIONS[:3]):
        messages.append(HumanMessage(content=question))
        reply = cached.invoke(messages).content
        if turn:
            assert llm._kv_cache.last_reused > 0
        assert reply == _fresh_reply(fresh, messages)
        messages.append(AIMessage(content=reply))
