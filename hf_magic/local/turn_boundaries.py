"""Where a chat prompt's earlier generations started, in tokens: the points its prefill is cut at.

Each earlier assistant message began where an earlier prompt ended: the chat template rendered the messages before
it with the generation prompt (``<|im_start|>assistant\\n``...), the model generated from there, and that turn's
KV cache holds exactly those positions (``kv_cache.py``). A prefill cut at the same points, fresh or reused, runs
the same passes over the same tokens, so a reused turn computes the bits a fresh prefill computes.

A point counts only where the template is prefix-stable there: the earlier prompt, rendered on its own, is a string
prefix of the full prompt and ends on a token boundary of it. Templates that render earlier turns otherwise (drop
past thinking, write a date, add an empty think block to the generation prompt) lose those points and the reuse
they would give, never exactness: a cache is reused only up to a point that the new prompt cuts at too, with the
same points before it (``kv_cache.reusable_length``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidInputError


def generation_prefixes(messages: Sequence[dict[str, Any]], render: Callable[[list[dict[str, Any]]], str]) -> list[str]:
    """The prompts each earlier assistant message was generated from: ``render`` (the chat template with the
    generation prompt) of the messages before it. A prefix the template refuses is left out."""
    prefixes = []
    for index, message in enumerate(messages):
        if index == 0 or message.get("role") != "assistant":
            continue
        try:
            prefixes.append(render(list(messages[:index])))
        except InvalidInputError:  # e.g. a template that wants a user message last: no point there
            continue
    return prefixes


def token_starts(prompt: str, prefixes: Sequence[str], offsets: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """The token index at which each of ``prefixes`` ends in ``prompt``, tokenized with character ``offsets``:
    only prefixes that ``prompt`` starts with and that end between two tokens, strictly inside the prompt."""
    starts = [start for start, _ in offsets]
    found: list[int] = []
    for prefix in prefixes:
        if not prompt.startswith(prefix):
            continue
        index = bisect_left(starts, len(prefix))
        inside = 0 < index < len(offsets)
        if inside and offsets[index - 1][1] <= len(prefix) and (not found or index > found[-1]):
            found.append(index)
    return tuple(found)


def prompt_ids_and_starts(tokenizer: Any, prompt: str, prefixes: Sequence[str]) -> tuple[list[int], tuple[int, ...]]:
    """``prompt``'s token ids and the token positions where ``prefixes`` (``generation_prefixes``) end in it.

    One tokenization of the whole prompt, with character offsets, places every point; a tokenizer without
    offsets (a slow, Python one) tokenizes each earlier prompt instead and keeps those that are token prefixes.
    """
    if not prefixes:
        return tokenizer(prompt, add_special_tokens=False)["input_ids"], ()
    try:
        encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):
        encoded = None
    if encoded is not None and encoded.get("offset_mapping") is not None:
        ids: list[int] = encoded["input_ids"]
        return ids, token_starts(prompt, prefixes, encoded["offset_mapping"])
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    found: list[int] = []
    for prefix in prefixes:
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        if 0 < len(head) < len(ids) and ids[: len(head)] == head and (not found or len(head) > found[-1]):
            found.append(len(head))
    return ids, tuple(found)


def shifted_to_suffix(
    plain_ids: Sequence[int], plain_starts: Sequence[int], ids: Sequence[int], images_end: int = 0
) -> tuple[int, ...]:
    """Points found in ``plain_ids`` (a vision prompt's text tokenized alone) placed in ``ids`` (the processor's,
    each image token expanded into many): a point carries over where it lies after the last image of ``ids``
    (``images_end``) and everything after it is the same in both. Points before the last image are dropped:
    a prompt whose pixels must be given is prefilled from its start (``vision.image_prefill``), its first
    pass holding every image."""
    common = 0  # how many trailing tokens both have alike
    while common < min(len(ids), len(plain_ids)) and ids[-1 - common] == plain_ids[-1 - common]:
        common += 1
    shift = len(ids) - len(plain_ids)
    return tuple(
        start + shift
        for start in plain_starts
        if len(plain_ids) - start <= common and start + shift >= max(images_end, 1)
    )
