"""Vision-language models in process: recognise them, and turn messages with images into the model's inputs.

A VLM is loaded with its processor (``AutoProcessor`` / ``AutoModelForImageTextToText``, ``loading.py``); its chat
template writes an image token per image part, and the processor resizes each image and expands its token into
as many as the model's vision encoder yields. Those positions are what the KV cache must hold for a later turn
to skip the pixels (``image_prefill``). A prompt is cut only where its earlier generations started after its last
image (``turn_boundaries.shifted_to_suffix``), so the pass that starts at position 0 carries every image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ImageError
from ..images import is_image_block, load_image
from .chat_template import to_template_messages
from .kv_cache import CacheLease, ConversationCache
from .turn_boundaries import generation_prefixes, prompt_ids_and_starts, shifted_to_suffix

TASK = "image-text-to-text"

NEW_IMAGE_PREFILL_NOTE = (
    "prefilled from the start: this turn has an image the kept cache does not hold, so every image is encoded again"
)


def is_vision_language(path: Path) -> bool:
    """Whether the model folder at ``path`` holds a vision-language model (its config maps to an image-text-to-text
    class, or has a vision tower), read from ``config.json`` without loading anything."""
    from transformers import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, AutoConfig

    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if "vision_config" in raw:
        return True
    try:
        model_config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError):
        return False
    return type(model_config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING


@dataclass
class VisionPrompt:
    """A prompt as the processor made it: ``input_ids`` with every image's tokens expanded, and the other tensors
    the model takes (``pixel_values`` and the like)."""

    input_ids: list[int]
    model_inputs: dict[str, Any] = field(default_factory=dict)
    image_count: int = 0
    image_tokens: int = 0
    """How many of ``input_ids`` stand for image patches."""
    images_end: int = 0
    """The index past the last image token (0: no image): a cache holding this many positions holds every image."""
    turn_starts: tuple[int, ...] = ()
    """Where the prompt's earlier generations started (``turn_boundaries.py``): the points its prefill is cut at."""


def template_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Messages as VLM chat templates take them (content a list of ``text`` / ``image`` parts, in order), and the
    image blocks in prompt order."""
    adapted = to_template_messages([{**message, "content": ""} for message in messages])
    images: list[dict[str, Any]] = []
    for item, message in zip(adapted, messages, strict=True):
        content = message.get("content")
        parts: list[dict[str, Any]] = []
        for block in content if isinstance(content, list) else [content or ""]:
            if isinstance(block, dict) and is_image_block(block):
                images.append(block)
                parts.append({"type": "image"})
            elif isinstance(block, str):
                parts.append({"type": "text", "text": block})
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append({"type": "text", "text": str(block.get("text", ""))})
            else:
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise ImageError(f"Content blocks of type {kind!r} are not supported locally: send text and images.")
        item["content"] = parts
    return adapted, images


def render_vision_prompt(
    processor: Any, model: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> VisionPrompt:
    """The processor's inputs for ``messages``: the chat template's prompt, with the images loaded and processed.

    Raises:
        ImageError: an image that cannot be read or fetched.
        InvalidInputError: the chat template refused the messages.
    """
    from ..errors import InvalidInputError

    adapted, blocks = template_messages(messages)

    def render(part: list[dict[str, Any]]) -> str:
        try:
            text: str = processor.apply_chat_template(
                part, tools=tools or None, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # jinja2 TemplateError from the template's raise_exception()
            raise InvalidInputError(f"The model's chat template rejected these messages: {exc}") from exc
        return text

    prompt = render(adapted)
    images = [load_image(block) for block in blocks]
    # One sample: processors take a list of images per sample.
    inputs = processor(text=[prompt], images=[images] if images else None, return_tensors="pt")
    input_ids = inputs.pop("input_ids")[0].tolist()
    inputs.pop("attention_mask", None)
    token_ids = image_token_ids(processor, model)
    positions = [index for index, token in enumerate(input_ids) if token in token_ids]
    images_end = positions[-1] + 1 if positions else 0
    starts: tuple[int, ...] = ()
    if not (positions and uses_multimodal_positions(model)):  # M-RoPE: positions follow the images, never cut
        prefixes = generation_prefixes(adapted, render)
        plain_ids, plain_starts = prompt_ids_and_starts(processor.tokenizer, prompt, prefixes)
        starts = shifted_to_suffix(plain_ids, plain_starts, input_ids, images_end)
    return VisionPrompt(
        input_ids=input_ids,
        model_inputs=dict(inputs) if images else {},
        image_count=len(images),
        image_tokens=len(positions),
        images_end=images_end,
        turn_starts=starts,
    )


def image_token_ids(processor: Any, model: Any) -> set[int]:
    """The ids of the tokens that the model replaces with image features."""
    found = set()
    for owner in (processor, model.config):
        for name in ("image_token_id", "image_token_index", "video_token_id"):
            value = getattr(owner, name, None)
            if isinstance(value, int):
                found.add(value)
    token = getattr(processor, "image_token", None)
    if isinstance(token, str):
        found.add(processor.tokenizer.convert_tokens_to_ids(token))
    return found


def uses_multimodal_positions(model: Any) -> bool:
    """Whether the model numbers positions from the images' layout (Qwen2-VL's M-RoPE): a turn that skips the
    pixels could not rebuild them, so such a model always prefills images in full. Such models compute those
    positions in ``get_rope_index`` (Qwen2-VL, Qwen2.5-VL...) and their configs name an ``mrope_section``."""
    for owner in (model, getattr(model, "model", None)):
        if callable(getattr(owner, "get_rope_index", None)):
            return True
    text_config = getattr(model.config, "text_config", model.config)
    for name in ("rope_parameters", "rope_scaling"):
        settings = getattr(text_config, name, None)
        if isinstance(settings, dict) and "mrope_section" in settings:
            return True
    return False


def image_prefill(
    cache: ConversationCache, model: Any, lease: CacheLease | None, prompt: VisionPrompt
) -> tuple[CacheLease | None, dict[str, Any]]:
    """The lease and extra ``generate`` inputs (pixels) for a prompt with images.

    When the kept cache already holds every image position (a text turn after an image turn), the pixels are not
    needed and the turn prefills only its new tokens. Otherwise the prompt is prefilled from its start and the
    pixels go with its first pass, which holds every image (the prompt is cut only after its last image):
    ``cache.last_note`` says so.
    """
    if prompt.images_end == 0:
        return lease, {}
    if lease is not None and lease.reused >= prompt.images_end and not uses_multimodal_positions(model):
        return lease, {}
    if lease is not None:
        lease = cache.restart(model, lease, NEW_IMAGE_PREFILL_NOTE)
    return lease, prompt.model_inputs


def model_tensors(inputs: dict[str, Any], model: Any) -> dict[str, Any]:
    """The processor's tensors on the model's device, pixels in the model's dtype (a bf16 model gets bf16)."""
    moved = {}
    for name, value in inputs.items():
        if hasattr(value, "to"):
            value = value.to(model.device, dtype=model.dtype) if value.is_floating_point() else value.to(model.device)
        moved[name] = value
    return moved
