"""Local vision-language models: tiny random LLaVA and Idefics3 with their real processors, loaded like hub VLMs.

A random model's words are noise; what is asserted is the mechanics: the processor's pixels reach the vision
encoder, the image tokens are in the prompt, stream equals invoke, a text turn after an image turn reuses the
cache and skips the pixels, and the errors name what to do.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from hf_magic import ChatHuggingFace, HuggingFacePipeline
from hf_magic.errors import ContextWindowError, ImageError, InvalidInputError
from hf_magic.local.kv_cache import ConversationCache
from hf_magic.local.vision import NEW_IMAGE_PREFILL_NOTE, image_token_ids, is_vision_language
from tests.support.tiny_vlms import FAMILIES, build_tiny_vlm

PIL = pytest.importorskip("PIL")


@pytest.fixture(scope="module", params=FAMILIES)
def vlm_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture
def vlm(vlm_dir: Path) -> HuggingFacePipeline:
    llm = HuggingFacePipeline.from_model_id(
        str(vlm_dir), task="image-text-to-text", pipeline_kwargs={"max_new_tokens": 6, "do_sample": False}
    )
    return llm


def png_bytes(color: str = "red", size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def image_message(text: str = "What is in this picture?", color: str = "red") -> HumanMessage:
    data = base64.b64encode(png_bytes(color)).decode()
    return HumanMessage(
        content=[{"type": "image", "base64": data, "mime_type": "image/png"}, {"type": "text", "text": text}]
    )


def vision_encoder(model: Any) -> Any:
    """The model's vision tower (LLaVA calls it ``vision_tower``, Idefics3 ``vision_model``)."""
    inner = model.model
    return getattr(inner, "vision_tower", None) or inner.vision_model


def record_pixels(model: Any) -> list[Any]:
    """The pixel tensors the vision encoder receives, call by call."""
    seen: list[Any] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(args[0] if args else kwargs.get("pixel_values"))

    vision_encoder(model).register_forward_pre_hook(record, with_kwargs=True)
    return seen


def test_a_vision_config_is_recognised(vlm_dir: Path) -> None:
    from hf_magic.local.loading import ensure_default_model

    assert is_vision_language(vlm_dir)
    assert not is_vision_language(ensure_default_model())


def test_loads_with_the_models_processor_whatever_the_task(vlm_dir: Path) -> None:
    llm = HuggingFacePipeline.from_model_id(str(vlm_dir))  # task defaults to text-generation: detected
    assert llm.reads_images
    assert type(llm.processor).__name__ in ("LlavaProcessor", "Idefics3Processor")
    assert llm.tokenizer is llm.processor.tokenizer


def test_pixels_reach_the_model_and_image_tokens_are_in_the_prompt(vlm: HuggingFacePipeline) -> None:
    import torch

    pixels = record_pixels(vlm.model)
    message = image_message()
    reply = ChatHuggingFace(llm=vlm).invoke([message])
    assert pixels, "the vision encoder never ran"
    prompt = vlm._chat_prompt(ChatHuggingFace(llm=vlm)._request([message], None))
    expected = prompt.model_inputs["pixel_values"]
    assert torch.equal(pixels[0].reshape(-1, *expected.shape[-3:]), expected.reshape(-1, *expected.shape[-3:]))
    tokens = image_token_ids(vlm.processor, vlm.model)
    assert prompt.image_tokens == sum(1 for token in prompt.input_ids if token in tokens) > 1
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == len(prompt.input_ids)  # image tokens counted
    assert vlm.last_prefill_note == NEW_IMAGE_PREFILL_NOTE


def test_stream_equals_invoke(vlm: HuggingFacePipeline) -> None:
    chat = ChatHuggingFace(llm=vlm)
    whole = chat.invoke([image_message()])
    chunks = list(chat.stream([image_message()]))
    assert "".join(str(chunk.content) for chunk in chunks) == whole.content
    assert sum((chunk for chunk in chunks[1:]), chunks[0]).usage_metadata == whole.usage_metadata


async def test_astream_equals_invoke(vlm: HuggingFacePipeline) -> None:
    chat = ChatHuggingFace(llm=vlm)
    whole = chat.invoke([image_message()])
    chunks = [chunk async for chunk in chat.astream([image_message()])]
    assert "".join(str(chunk.content) for chunk in chunks) == whole.content


def test_a_text_turn_after_an_image_reuses_the_cache_and_skips_the_pixels(vlm: HuggingFacePipeline) -> None:
    chat = ChatHuggingFace(llm=vlm)
    pixels = record_pixels(vlm.model)
    history: list[Any] = [image_message()]
    history.append(chat.invoke(history))
    assert len(pixels) == 1 and vlm._kv_cache.last_reused == 0
    history.append(HumanMessage("And what colour is it?"))
    second = chat.invoke(history)
    assert len(pixels) == 1, "the pixels were encoded again though the cache holds the image"
    assert vlm._kv_cache.last_reused > 0 and vlm.last_prefill_note is None
    assert second.usage_metadata is not None and second.usage_metadata["input_tokens"] > vlm._kv_cache.last_reused
    history += [second, image_message("And this one?", color="blue")]
    chat.invoke(history)  # a new image: one pass over the whole prompt, with both images' pixels
    assert len(pixels) == 2 and vlm._kv_cache.last_reused == 0
    assert vlm.last_prefill_note == NEW_IMAGE_PREFILL_NOTE


@pytest.mark.exactness
def test_a_text_turn_after_an_image_equals_a_fresh_prefill_that_encodes_the_image_in_its_first_pass(
    vlm: HuggingFacePipeline,
) -> None:
    chat = ChatHuggingFace(llm=vlm)
    fresh = ChatHuggingFace(
        llm=HuggingFacePipeline(pipeline=vlm.pipeline, pipeline_kwargs=vlm.pipeline_kwargs, reuse_kv_cache=False)
    )
    history: list[Any] = [image_message()]
    history.append(chat.invoke(history))
    history.append(HumanMessage("And what colour is it?"))
    prompt = vlm._chat_prompt(chat._request(history, None))
    assert prompt.turn_starts and prompt.turn_starts[0] >= prompt.images_end, "cut after the image"
    pixels = record_pixels(vlm.model)
    reused = chat.invoke(history, logprobs=True, top_logprobs=3)
    assert vlm._kv_cache.last_reused == prompt.turn_starts[-1] and not pixels
    again = fresh.invoke(history, logprobs=True, top_logprobs=3)
    assert len(pixels) == 1, "the fresh prefill encodes the image once, in its first pass"
    assert reused.content == again.content
    assert reused.response_metadata["logprobs"] == again.response_metadata["logprobs"]


def test_stop_sequences_and_cancel_work_as_for_text(vlm: HuggingFacePipeline) -> None:
    chat = ChatHuggingFace(llm=vlm)
    whole = chat.invoke([image_message()], max_tokens=6)
    text = str(whole.content)
    assert len(text) > 2
    stop = text[1:3]
    stopped = chat.invoke([image_message()], max_tokens=6, stop=[stop])
    assert stop not in str(stopped.content) and text.startswith(str(stopped.content))
    stream = chat.stream([image_message()], max_tokens=6)
    next(stream)
    stream.close()  # abandoning a stream releases the model
    assert chat.invoke([image_message()], max_tokens=6).content == whole.content


def test_local_paths_and_data_urls_are_the_same_image(vlm: HuggingFacePipeline, tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes())
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    chat = ChatHuggingFace(llm=vlm)
    replies = [
        chat.invoke([HumanMessage(content=[{"type": "image", "url": str(path)}, "What is it?"])]).content,
        chat.invoke([HumanMessage(content=[{"type": "image_url", "image_url": {"url": url}}, "What is it?"])]).content,
        chat.invoke([image_message("What is it?")]).content,
    ]
    assert replies[0] == replies[1] == replies[2]


def test_unreadable_file_is_one_clear_error(vlm: HuggingFacePipeline, tmp_path: Path) -> None:
    chat = ChatHuggingFace(llm=vlm)
    with pytest.raises(ImageError, match=r"Cannot read the image file .*missing\.png.*check the path"):
        chat.invoke([HumanMessage(content=[{"type": "image", "url": str(tmp_path / "missing.png")}, "hi"])])
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        chat.invoke([HumanMessage(content=[{"type": "image", "url": str(not_image)}, "hi"])])
    assert chat.invoke([image_message()]).content is not None  # the model survives


def test_an_unreachable_url_says_the_machine_may_be_offline(vlm: HuggingFacePipeline) -> None:
    from tests.support.serve import free_port

    url = f"http://127.0.0.1:{free_port()}/plot.png"
    with pytest.raises(ImageError, match=r"Cannot fetch the image .*offline"):
        ChatHuggingFace(llm=vlm).invoke([HumanMessage(content=[{"type": "image", "url": url}, "hi"])])


def test_an_image_too_large_for_the_context_is_refused(vlm_dir: Path) -> None:
    llm = HuggingFacePipeline.from_model_id(str(vlm_dir), pipeline_kwargs={"max_new_tokens": 2})
    window = len(llm._chat_input_ids(ChatHuggingFace(llm=llm)._request([HumanMessage("hi")], None)))
    llm.model.config.get_text_config().max_position_embeddings = window + 4  # room for text, not for an image
    with pytest.raises(ContextWindowError, match=r"of them for its images after the processor's resizing") as caught:
        ChatHuggingFace(llm=llm).invoke([image_message("hi")])
    assert caught.value.image_tokens and caught.value.image_tokens > 1
    assert "of them for its images" in str(caught.value.with_remedy("use --history-limit"))  # the magic's wording


def test_task_image_text_to_text_refuses_a_text_model() -> None:
    with pytest.raises(InvalidInputError, match="not a vision-language model"):
        HuggingFacePipeline.from_model_id("default", task="image-text-to-text")


@pytest.mark.integration
def test_an_image_to_the_text_model_names_it_and_says_use_a_vlm(chat_model: ChatHuggingFace) -> None:
    with pytest.raises(ImageError, match=r"SmolLM2-135M-Instruct reads text only .* vision-language model"):
        chat_model.invoke([image_message()])
    assert chat_model.invoke("Hi", max_tokens=2).content is not None


def test_loading_a_vlm_reports_weight_progress(vlm_dir: Path) -> None:
    events: list[Any] = []
    HuggingFacePipeline.from_model_id(str(vlm_dir), task="image-text-to-text", progress=events.append)
    loads = [event for event in events if event.stage == "load"]
    assert loads and loads[-1].done and loads[-1].total and loads[-1].current == loads[-1].total


@pytest.mark.integration
def test_a_4bit_quantized_vlm_reads_images(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    folder = build_tiny_vlm("llava", tmp_path / "llava", width=128)  # 4-bit blocks need 64 columns or more
    llm = HuggingFacePipeline.from_model_id(
        str(folder),
        model_kwargs={"quantization_config": BitsAndBytesConfig(load_in_4bit=True)},
        pipeline_kwargs={"max_new_tokens": 3},
    )
    assert any(type(module).__name__ == "Linear4bit" for module in llm.model.modules())
    pixels = record_pixels(llm.model)
    reply = ChatHuggingFace(llm=llm).invoke([image_message()])
    assert len(pixels) == 1 and reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0


def test_models_that_place_positions_by_image_layout_always_prefill_images_in_full(vlm: HuggingFacePipeline) -> None:
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from hf_magic.local.vision import VisionPrompt, image_prefill, uses_multimodal_positions

    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    vision = dict(depth=1, embed_dim=16, hidden_size=16, num_heads=2)
    qwen = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=dict(vocab_size=64, **tiny), vision_config=vision))
    assert uses_multimodal_positions(qwen) and not uses_multimodal_positions(vlm.model)
    # A lease that holds the image's positions: enough for LLaVA or Idefics3 to skip the pixels, not for Qwen2-VL.
    store = ConversationCache()
    prompt = VisionPrompt(input_ids=list(range(12)), model_inputs={"pixel_values": torch.zeros(1)}, images_end=4)
    lease = store.take(vlm.model, prompt.input_ids)
    assert lease is not None
    lease.reused = 8
    kept, inputs = image_prefill(store, vlm.model, lease, prompt)
    assert kept is lease and inputs == {}
    full, inputs = image_prefill(store, qwen, lease, prompt)
    assert full is not None and full.reused == 0 and "pixel_values" in inputs
    assert store.last_note == NEW_IMAGE_PREFILL_NOTE
