"""hf_magic on a CUDA GPU: where sessions put the model, quantized loads, streaming, async, constrained
decoding and KV-cache reuse. Skipped without a GPU (CI has none).

On a GPU machine: ``pytest tests/test_cuda.py``, on the embedded default model; ``HF_MAGIC_TEST_MODEL=FOLDER``
runs them on another local model folder instead.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import torch
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

MODEL = os.environ.get("HF_MAGIC_TEST_MODEL", "default")
QUESTIONS = ["What is the capital of France?", "And of Germany?", "Write a haiku about rivers.", "What is 12 times 7?"]


@pytest.fixture(scope="module")
def session():
    from hf_magic.notebook.model_spec import ModelSpec
    from hf_magic.notebook.session import ChatSession
    from hf_magic.notebook.turns import Settings

    chat = ChatSession("cuda", ModelSpec(model=MODEL), Settings(max_new_tokens=16, temperature=0))
    chat.load()
    yield chat
    chat.unload()


def _on_gpu(model) -> bool:
    return all(parameter.device.type == "cuda" for parameter in model.parameters())


def test_a_session_puts_the_model_on_the_gpu_where_it_keeps_sdpa(session) -> None:
    model = session.chat_model.llm.model
    assert _on_gpu(model)
    assert model.config._attn_implementation == "sdpa"


def test_turns_stream_with_usage_and_reuse_the_cache_in_gpu_memory(session) -> None:
    pieces: list[str] = []
    first = session.send("Hello! Who are you?", on_token=pieces.append)
    assert first.reply and "".join(pieces) == first.reply
    assert first.usage is not None and first.usage.output_tokens > 0
    session.send("And what can you do? " * 40)  # the next turn prefills from where this one's reply began
    session.send("Thanks.")
    store = session.chat_model.llm._kv_cache
    assert store.last_reused > 0
    assert all(layer.keys.device.type == "cuda" for layer in store._cache.layers)


def test_async_streaming_on_the_gpu(session) -> None:
    async def collect() -> str:
        return "".join([str(chunk.content) async for chunk in session.chat_model.astream("Name a color.")])

    assert asyncio.run(collect())


def test_structured_output_masks_logits_on_the_gpu(session) -> None:
    """xgrammar applies its token bitmask where the logits are: on the GPU here."""
    schema = {
        "title": "verdict",
        "description": "Whether the statement is true.",
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"],
    }
    structured = session.chat_model.bind(max_tokens=20).with_structured_output(schema, method="json_schema")
    assert structured.invoke("Is Paris in France?") in ({"answer": "yes"}, {"answer": "no"})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_replies_with_cache_reuse_equal_fresh_prefills_on_the_gpu(dtype: str) -> None:
    from hf_magic import ChatHuggingFace, HuggingFacePipeline

    llm = HuggingFacePipeline.from_model_id(
        MODEL, device="cuda", model_kwargs={"dtype": dtype}, pipeline_kwargs={"max_new_tokens": 24, "do_sample": False}
    )
    cached = ChatHuggingFace(llm=llm)
    fresh = ChatHuggingFace(
        llm=HuggingFacePipeline(pipeline=llm.pipeline, model_id=llm.model_id, pipeline_kwargs=llm.pipeline_kwargs)
    )
    messages: list[BaseMessage] = [SystemMessage(content="You're a helpful assistant. " * 30)]
    for turn, question in enumerate(QUESTIONS * 2):
        messages.append(HumanMessage(content=question))
        reply = cached.invoke(messages).content
        if turn:
            assert llm._kv_cache.last_reused > 0
        fresh.llm.reset_cache()
        assert reply == fresh.invoke(messages).content, f"turn {turn + 1} differs"
        messages.append(AIMessage(content=reply))


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_a_quantized_session_runs_on_the_gpu_in_less_memory(session, quantize: str) -> None:
    from hf_magic.notebook.model_spec import ModelSpec
    from hf_magic.notebook.session import ChatSession
    from hf_magic.notebook.turns import Settings

    full = session.chat_model.llm.model.get_memory_footprint()
    quantized = ChatSession(f"cuda-{quantize}", ModelSpec(model=MODEL, quantize=quantize), Settings(max_new_tokens=8))
    try:
        quantized.send("Hello! " * 80)  # the next turn prefills from where this one's reply began
        turn = quantized.send("Tell me more.")
        llm = quantized.chat_model.llm
        assert _on_gpu(llm.model)
        assert turn.usage is not None and turn.usage.output_tokens > 0
        assert llm._kv_cache.last_reused > 0
        limit = 0.45 if quantize == "4bit" else 0.7  # embeddings and norms stay in bf16
        assert llm.model.get_memory_footprint() <= limit * full
    finally:
        quantized.unload()


def test_a_pipeline_given_no_device_runs_on_the_gpu_with_sdpa() -> None:
    from hf_magic import HuggingFacePipeline

    llm = HuggingFacePipeline.from_model_id(MODEL)
    assert _on_gpu(llm.model) and llm.pipeline.device.type == "cuda"
    assert llm.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("quantized", [False, True], ids=["bf16", "4bit"])
def test_a_model_asked_for_on_the_cpu_stays_there(quantized: bool) -> None:
    """transformers' pipeline moves a model without a device map to the GPU, and bitsandbytes loads onto it,
    whatever ``device`` said."""
    from transformers import BitsAndBytesConfig

    from hf_magic import HuggingFacePipeline

    model_kwargs = {"quantization_config": BitsAndBytesConfig(load_in_4bit=True)} if quantized else {}
    llm = HuggingFacePipeline.from_model_id(MODEL, device="cpu", model_kwargs=model_kwargs)
    assert all(parameter.device.type == "cpu" for parameter in llm.model.parameters())
    assert llm.pipeline.device.type == "cpu"
    assert llm.invoke("Hello", max_new_tokens=2)
