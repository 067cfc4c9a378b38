"""Tiny random-weight vision-language models saved as real hub-style folders (LLaVA, Idefics3), built offline.

Each folder holds a real ``*ForConditionalGeneration`` of a few thousand parameters, its real processor class
constructed from its defaults (sizes shrunk so an image is a handful of tokens), and the default model's
tokenizer with the image tokens added; so ``HuggingFacePipeline.from_model_id(folder)`` loads it through
``AutoProcessor`` / ``AutoModelForImageTextToText`` like any VLM from the hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# A ChatML template that writes each image part as the processor's image token: what VLM templates on the hub do.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}IMAGE_TOKEN"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _text_sizes(width: int) -> dict[str, int]:
    return dict(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048,
    )  # fmt: skip


def _vision_sizes(width: int) -> dict[str, int]:
    return dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1, num_attention_heads=4)


FAMILIES = ("llava", "idefics3")


def _tokenizer_with(tokens: list[str]) -> Any:
    from transformers import AutoTokenizer

    from hf_magic.local.loading import ensure_default_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    return tokenizer


def build_tiny_vlm(family: str, folder: str | Path, width: int = 32) -> Path:
    """Save a tiny random ``family`` VLM (one of ``FAMILIES``) with its processor into ``folder``; returns it.
    ``width`` is the hidden size of both towers (bitsandbytes' 4-bit blocks need at least 64)."""
    import torch

    folder = Path(folder)
    torch.manual_seed(0)
    if family == "llava":
        model, processor = _llava(width)
    elif family == "idefics3":
        model, processor = _idefics3(width)
    else:
        raise ValueError(f"unknown family {family!r}: one of {FAMILIES}")
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _llava(width: int) -> tuple[Any, Any]:
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _tokenizer_with(["<image>"])
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    # 32x32 pixels in 8x8 patches: 16 patch tokens per image (plus CLS, dropped by the "default" strategy).
    vision = CLIPVisionConfig(image_size=32, patch_size=8, projection_dim=width, **_vision_sizes(width))
    text = LlamaConfig(vocab_size=len(tokenizer), **_text_sizes(width))
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id, vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )  # fmt: skip
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=_CHAT_TEMPLATE.replace("IMAGE_TOKEN", "<image>"),
    )  # fmt: skip
    return LlavaForConditionalGeneration(config), processor


def _idefics3(width: int) -> tuple[Any, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = _tokenizer_with(["<fake_token_around_image>", "<image>", "<end_of_utterance>"])
    # 32x32 pixels in 8x8 patches, merged 2x2 (scale_factor): 4 image tokens per image, no splitting.
    vision = Idefics3VisionConfig(image_size=32, patch_size=8, **_vision_sizes(width))
    text = LlamaConfig(vocab_size=len(tokenizer), **_text_sizes(width))
    config = Idefics3Config(
        vision_config=vision, text_config=text, scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
        chat_template=_CHAT_TEMPLATE.replace("IMAGE_TOKEN", "<image>"),
    )  # fmt: skip
    return Idefics3ForConditionalGeneration(config), processor
