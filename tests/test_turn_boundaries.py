"""Where earlier generations started in a chat prompt: found from the chat template, only where it is prefix-stable."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hf_magic.backend import ChatRequest
from hf_magic.local.prompt import PromptRenderer
from hf_magic.local.turn_boundaries import shifted_to_suffix, token_starts

CONVERSATION = [
    {"role": "system", "content": "You're a helpful assistant"},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Germany?"},
    {"role": "assistant", "content": "Berlin, on the Spree."},
    {"role": "user", "content": "Tell me a fact about Berlin."},
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from hf_magic.local.loading import ensure_default_model

    return AutoTokenizer.from_pretrained(ensure_default_model())


def _starts(tokenizer: Any, messages: list[dict[str, Any]] = CONVERSATION) -> tuple[list[int], tuple[int, ...]]:
    renderer = PromptRenderer(None, tokenizer, None, "default", None)
    return renderer.render_ids_and_starts(messages, ChatRequest(messages=messages))


def _ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_stable_template_is_cut_at_the_end_of_each_earlier_prompt(tokenizer: Any) -> None:
    ids, starts = _starts(tokenizer)
    earlier = [_ids(tokenizer, CONVERSATION[:end]) for end in (2, 4)]
    assert starts == tuple(len(prompt) for prompt in earlier)
    assert all(ids[: len(prompt)] == prompt for prompt in earlier)
    assert ids == _ids(tokenizer, CONVERSATION)


def test_a_single_turn_prompt_is_not_cut(tokenizer: Any) -> None:
    assert _starts(tokenizer, CONVERSATION[:2])[1] == ()


class _NoOffsets:
    """The default tokenizer refusing character offsets, as a slow (Python) tokenizer does."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, text: str, **kwargs: Any) -> Any:
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        return self._tokenizer(text, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def test_a_tokenizer_without_offsets_finds_the_same_points(tokenizer: Any) -> None:
    assert _starts(_NoOffsets(tokenizer)) == _starts(tokenizer)


@pytest.mark.parametrize(
    "change",
    [
        # Like a date: the first line differs with every render.
        ("{% for message in messages %}", "{{ messages | length }} messages.\n{% for message in messages %}"),
        # Like Qwen3 with thinking off: the generation prompt writes what earlier turns do not hold.
        ("'<|im_start|>assistant\n' }}", "'<|im_start|>assistant\n<think>\n\n</think>\n\n' }}"),
    ],
    ids=["counts-messages", "empty-think-block"],
)
def test_a_template_that_renders_earlier_turns_otherwise_is_not_cut_there(
    tokenizer: Any, change: tuple[str, str]
) -> None:
    changed = copy.deepcopy(tokenizer)
    assert change[0] in changed.chat_template
    changed.chat_template = changed.chat_template.replace(*change)
    ids, starts = _starts(changed)
    assert starts == ()
    assert ids == _ids(changed, CONVERSATION)


def test_a_prefix_that_ends_inside_a_token_is_no_point() -> None:
    offsets = [(0, 3), (3, 5), (5, 9), (9, 10)]
    prompt = "abcdefghij"
    assert token_starts(prompt, ["abc", "abcd", "abcdefghi", "xyz", "abcdefghij"], offsets) == (1, 3)
    assert token_starts(prompt, ["abcde", "abc"], offsets) == (2,), "points only ever increase"


def test_points_carry_over_to_expanded_image_tokens_only_after_the_last_image() -> None:
    image = 7
    plain = [1, 2, image, 3, 4, 5, 6]  # the text tokenized alone: one image token
    expanded = [0, 1, 2, image, image, image, 3, 4, 5, 6]  # the processor's: a BOS, the image as three tokens
    images_end = 6
    assert shifted_to_suffix(plain, [2, 3, 5], expanded, images_end) == (6, 8)
    assert shifted_to_suffix(plain, [3, 5], [*expanded[:-1], 9], images_end) == (), "the text after differs"
