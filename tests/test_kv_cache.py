"""KV-cache reuse across turns: prefix logic, leases and resets, and identical replies to a fresh prefill."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from hf_magic.local.kv_cache import (
    ConversationCache,
    common_prefix_length,
    prompt_starts,
    reusable_length,
    supports_reuse,
)
from tests.support.cache_turns import generate_turn
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
    ("cached", "ends", "new", "starts", "reusable"),
    [
        ([], (), [1, 2, 3], (), 0),
        ([1, 2, 3, 4], (4,), [1, 2, 3, 4, 5, 6], (4,), 4),  # next turn: prefill only [5, 6]
        ([1, 2, 3, 4], (2, 4), [1, 2, 3, 4, 5, 6], (2, 4), 4),  # the same earlier cuts: reused up to the last
        ([1, 2, 3, 4], (4,), [1, 2, 3, 4, 5, 6], (), 0),  # a prompt not cut where the cache ends: from scratch
        ([1, 2, 3, 4], (4,), [1, 2, 3, 4, 5, 6], (2, 4), 0),  # cut where the cache was not: no pass would match
        ([1, 2, 3, 4], (2, 4), [1, 2, 3, 4, 5, 6], (2, 5), 2),  # the cuts part after 2: reused up to 2
        ([1, 2, 3, 4], (2, 4), [1, 2, 3, 4], (2,), 2),  # same prompt again: its last pass runs again
        ([1, 2, 3, 4], (4,), [1, 2, 3, 4], (), 0),  # ... a single-turn one is one pass, from scratch
        ([1, 2, 3, 4, 5, 6], (3, 6), [1, 2, 9, 4, 5, 6, 7], (3, 6), 0),  # history edited before the first cut
        ([1, 2, 3, 4, 5, 6], (3, 6), [1, 2, 3, 4, 9, 6, 7], (3, 6), 3),  # ... after it: reused up to it
        ([7, 2, 3, 4], (4,), [1, 2, 3, 4, 5], (4,), 0),  # system prompt changed: full prefill
    ],
)
def test_reuse_stops_at_the_last_cut_both_prefills_share(
    cached: list[int], ends: tuple[int, ...], new: list[int], starts: tuple[int, ...], reusable: int
) -> None:
    assert reusable_length(cached, ends, new, starts) == reusable


def test_prefix_lengths() -> None:
    assert common_prefix_length([1, 2, 3, 4], [1, 2, 5]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2


@pytest.mark.parametrize(
    ("starts", "length", "kept"),
    [((), 5, ()), ((2, 4), 5, (2, 4)), ((0, 2, 2, 5, 7), 5, (2,)), ((4, 2), 5, (4,))],
)
def test_cut_points_lie_strictly_inside_the_prompt_in_order(
    starts: tuple[int, ...], length: int, kept: tuple[int, ...]
) -> None:
    assert prompt_starts(starts, length) == kept


# ------------------------------------------------------------- leases on a tiny real model
def _tiny_model(sliding_window: int | None = None):
    if sliding_window is not None:
        return tiny_causal_lm("Mistral", sliding_window=sliding_window)
    return tiny_causal_lm("Llama")


def _generate(
    model, store: ConversationCache, ids: list[int], starts=(), new_tokens: int = 6, reuse: bool = True
) -> list[int]:
    """What the pipeline does (tests/support/cache_turns.py); the logits are left on ``store.logits``."""
    sequence, store.logits = generate_turn(model, store, ids, starts, new_tokens, reuse)  # type: ignore[attr-defined]
    return sequence


def _forward_lengths(model) -> list[int]:
    """The number of positions each forward pass of ``model`` computes, call by call."""
    seen: list[int] = []

    def record(_module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(ids.shape[1])

    model.register_forward_pre_hook(record, with_kwargs=True)
    return seen


def test_each_turn_prefills_one_pass_from_where_the_last_prompt_ended() -> None:
    model, store = _tiny_model(), ConversationCache()
    passes = _forward_lengths(model)
    prompt = [1, 5, 7, 9, 11, 13]
    first = _generate(model, store, prompt)
    assert passes[0] == 6 and store.cached_tokens == 6 and store.pass_ends == (6,)  # the reply is not kept
    passes.clear()
    second_prompt = [*first, 11, 12]
    _generate(model, store, second_prompt, (6,))
    assert store.last_reused == 6
    assert passes[0] == len(second_prompt) - 6, "the reply and the new message, in one pass"
    assert store.pass_ends == (6, len(second_prompt))
    edited = [*second_prompt[:7], 99, *second_prompt[8:]]  # the last reply edited
    lease = store.take(model, edited, (6,))
    assert lease is not None and lease.reused == 6 and lease.passes == ()
    assert lease.cache.get_seq_length() == lease.reused
    assert store.cached_tokens == 0  # taken: a generation that fails leaves nothing stale behind


def test_a_fresh_prefill_runs_the_passes_a_conversation_ran() -> None:
    model, store = _tiny_model(), ConversationCache()
    passes = _forward_lengths(model)
    _generate(model, store, list(range(1, 21)), starts=(5, 12), reuse=False)
    assert passes[:3] == [5, 7, 8], "cut at each earlier generation's start, the last pass in generate"
    passes.clear()
    _generate(model, ConversationCache(), list(range(1, 21)))
    assert passes[0] == 20, "a single-turn prompt is one pass"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_continuing_from_the_cache_computes_the_bits_of_a_fresh_prefill(dtype: str) -> None:
    """Every turn's logits, not only its tokens, are identical to a fresh prefill's cut at the same turn starts:
    the same shapes over the same positions, whatever the kernels' rounding."""
    import torch

    model = _tiny_model().to(getattr(torch, dtype))
    store, fresh = ConversationCache(), ConversationCache()
    ids, starts = [1, 5, 7, 9, 3], ()
    for turn in range(6):
        cached = _generate(model, store, ids, starts)
        cached_logits = store.logits
        assert cached == _generate(model, fresh, ids, starts, reuse=False)
        assert torch.equal(cached_logits, fresh.logits)
        if turn:
            assert store.last_reused == starts[-1]
        ids, starts = [*cached, 20 + turn, 30 + turn, 40 + turn][: len(cached) + 1 + turn % 3], (*starts, len(ids))


def test_reset_during_a_generation_drops_its_cache() -> None:
    import torch

    model, store = _tiny_model(), ConversationCache()
    lease = store.take(model, [1, 2, 3, 4, 5])
    tensor = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        output = model.generate(tensor, max_new_tokens=2, do_sample=False, pad_token_id=0, **lease.generate_kwargs())
    store.reset()
    store.keep(model, lease, output[0].tolist(), 5)
    assert store.cached_tokens == 0


def test_another_model_never_reuses_the_cache() -> None:
    first, second, store = _tiny_model(), _tiny_model(), ConversationCache()
    ids = _generate(first, store, [1, 2, 3, 4, 5, 6])
    assert store.cached_tokens > 0
    assert store.take(second, [*ids, 4], (6,)).reused == 0


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
"""A long system prompt (about 150 tokens): what every later turn takes from the cache."""


@pytest.fixture
def cached_and_fresh(default_llm):
    """Two chat models on the same loaded model: one keeps its cache, the other is reset before each call."""
    from hf_magic import ChatHuggingFace

    return ChatHuggingFace(llm=_wrapper(default_llm)), ChatHuggingFace(llm=_wrapper(default_llm))


def _fresh_reply(fresh, messages: list[BaseMessage], **kwargs) -> str:
    fresh.llm.reset_cache()
    return fresh.invoke(messages, **kwargs).content


@contextlib.contextmanager
def _passes(model) -> Iterator[list[int]]:
    """The positions each forward pass of ``model`` computes while the block runs, call by call."""
    seen: list[int] = []

    def record(_module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(ids.shape[1])

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.integration
def test_prefill_passes_are_cut_where_earlier_generations_started(default_llm) -> None:
    """A fresh single-turn prompt is one pass; a fresh conversation is cut at the end of each earlier prompt (after
    its assistant header); a reused turn prefills one pass, from there to its own end."""
    from hf_magic.backend import ChatRequest

    llm = _wrapper(default_llm, max_new_tokens=2)
    conversation = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTIONS[0]},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": QUESTIONS[1]},
        {"role": "assistant", "content": "Berlin."},
        {"role": "user", "content": QUESTIONS[2]},
    ]
    earlier = [llm._chat_prompt(ChatRequest(messages=conversation[:end])).input_ids for end in (2, 4)]
    prompt = llm._chat_prompt(ChatRequest(messages=conversation))
    assert prompt.turn_starts == tuple(len(ids) for ids in earlier)
    assert all(prompt.input_ids[: len(ids)] == ids for ids in earlier)
    with _passes(llm.model) as passes:
        llm.chat(ChatRequest(messages=conversation[:2]))
    assert passes == [len(earlier[0]), 1], "one pass over the prompt, then one decoded token"
    llm.reset_cache()
    with _passes(llm.model) as passes:
        llm.chat(ChatRequest(messages=conversation))
    e1, e2 = prompt.turn_starts
    assert passes == [e1, e2 - e1, len(prompt.input_ids) - e2, 1]
    follow = [*conversation, {"role": "assistant", "content": "It has a big park."}, {"role": "user", "content": "Ok"}]
    e3 = len(prompt.input_ids)
    with _passes(llm.model) as passes:
        reply = llm.chat(ChatRequest(messages=follow))
    assert llm._kv_cache.last_reused == e3
    assert reply.usage is not None and passes == [reply.usage.input_tokens - e3, 1]


@pytest.mark.integration
def test_the_default_dtype_suits_the_cpu(default_llm) -> None:
    """bf16 where the CPU computes it natively, float32 where it would be emulated (the AVX2 run of test.sh)."""
    import torch

    from hf_magic.local.loading import cpu_computes_bf16

    assert default_llm.model.dtype == (torch.bfloat16 if cpu_computes_bf16() else torch.float32)


@pytest.mark.integration
def test_a_repeated_question_gets_the_reply_of_a_fresh_prefill_every_time(default_llm) -> None:
    """The reported fault: asking again reused the cached prompt and prefilled its last tokens alone, which
    rounds unlike a full prefill on some CPUs and flipped the default model's near-tie first token. Asked again,
    a prompt runs its last pass again (a single-turn one: all of it)."""
    from hf_magic import ChatHuggingFace, HuggingFacePipeline

    single = [SystemMessage(content=SYSTEM), HumanMessage(content=QUESTIONS[0])]
    later = [*single, AIMessage(content="Paris."), HumanMessage(content=QUESTIONS[1])]
    cached = ChatHuggingFace(llm=_wrapper(default_llm))
    without_reuse = HuggingFacePipeline(
        pipeline=default_llm.pipeline, pipeline_kwargs=cached.llm.pipeline_kwargs, reuse_kv_cache=False
    )
    for messages, reused in ((single, 0), (later, len(cached.llm._chat_input_ids(cached._request(single, None))))):
        replies = []
        for _ in range(3):
            replies.append(cached.invoke(messages).content)
            assert cached.llm._kv_cache.cached_tokens > 0
        assert cached.llm._kv_cache.last_reused == reused
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
    rerun = list(edited)  # the same cell again: up to where its last generation started comes from the cache
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
def test_a_template_that_is_not_prefix_stable_is_prefilled_in_one_pass_with_fresh_prefill_replies(default_llm) -> None:
    """A chat template that renders each prompt's first line anew (like a date) gives no point to cut at: every
    turn is one pass from scratch, and replies are still those of a fresh prefill."""
    import copy

    from hf_magic import ChatHuggingFace, HuggingFacePipeline
    from hf_magic.local.pipeline import LoadedModel

    tokenizer = copy.deepcopy(default_llm.tokenizer)
    tokenizer.chat_template = "{{ messages | length }} messages.\n" + tokenizer.chat_template
    loaded = LoadedModel(default_llm.model, tokenizer)
    kwargs = {"max_new_tokens": 12, "do_sample": False}
    cached = ChatHuggingFace(llm=HuggingFacePipeline(pipeline=loaded, pipeline_kwargs=kwargs))
    fresh = ChatHuggingFace(llm=HuggingFacePipeline(pipeline=loaded, pipeline_kwargs=kwargs, reuse_kv_cache=False))
    messages: list[BaseMessage] = [SystemMessage(content=SYSTEM)]
    for question in QUESTIONS[:3]:
        messages.append(HumanMessage(content=question))
        reply = cached.invoke(messages).content
        assert cached.llm._kv_cache.last_reused == 0 and cached.llm._kv_cache.cached_tokens > 0
        assert reply == fresh.invoke(messages).content
        messages.append(AIMessage(content=reply))


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
