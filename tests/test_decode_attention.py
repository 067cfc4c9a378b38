"""Decoding attention on the CPU: transformers' SDPA for prefills, SDPA over the cache in place for one row."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from hf_magic.local.decode_attention import ATTENTION_NAME, grouped_decode_attention, register
from tests.support.tiny_models import tiny_causal_lm


class _Layer:
    is_causal, training, num_key_value_groups = True, False, 3


def _states(rows: int, keys: int, room: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, and keys and values that are views with ``room`` spare positions after them, as the cache has
    (the same values whatever the room)."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 6, rows, 16, generator=generator, dtype=torch.bfloat16)
    key, value = (torch.randn(1, 2, keys, 16, generator=generator, dtype=torch.bfloat16) for _ in range(2))
    key_buffer, value_buffer = (torch.zeros(1, 2, keys + room, 16, dtype=torch.bfloat16) for _ in range(2))
    key_buffer[:, :, :keys], value_buffer[:, :, :keys] = key, value
    return query, key_buffer[:, :, :keys], value_buffer[:, :, :keys]


@pytest.mark.parametrize("rows", [2, 70])
def test_a_prefill_is_transformers_sdpa_bit_for_bit(rows: int) -> None:
    query, key, value = _states(rows, 300)
    mask = torch.ones(rows, 300, dtype=torch.bool).tril_(300 - rows)[None, None]
    ours, _ = grouped_decode_attention(_Layer(), query, key, value, mask, scaling=0.25)
    theirs, _ = sdpa_attention_forward(_Layer(), query, key, value, mask, scaling=0.25)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "padding mask"])
def test_a_decoded_row_is_sdpa_within_rounding_whatever_the_room_after_the_keys(masked: bool) -> None:
    outputs = []
    for room in (0, 300):
        query, key, value = _states(1, 700, room)
        mask = torch.ones(1, 1, 1, 700, dtype=torch.bool)
        if masked:
            mask[..., :5] = False
        outputs.append(grouped_decode_attention(_Layer(), query, key, value, mask if masked else None, scaling=0.25)[0])
    assert torch.equal(outputs[0], outputs[1])  # a reused cache and a fresh one have different spare room
    expected, _ = sdpa_attention_forward(_Layer(), query, key, value, mask if masked else None, scaling=0.25)
    torch.testing.assert_close(outputs[0], expected, atol=2e-2, rtol=2e-2)


def test_a_tiny_model_generates_what_it_generates_with_sdpa() -> None:
    """float32, where SDPA's two layouts agree to far below a greedy near-tie on random weights."""
    register()
    prompt = torch.tensor([[1, 5, 7, 9, 11, 13, 15]])
    runs = {}
    for name in (ATTENTION_NAME, "sdpa"):
        model = tiny_causal_lm("Llama")
        model.set_attn_implementation(name)
        with torch.inference_mode():
            runs[name] = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, min_new_tokens=12,
                do_sample=False, pad_token_id=0,
            )  # fmt: skip
    assert torch.equal(runs[ATTENTION_NAME], runs["sdpa"])


@pytest.mark.integration
def test_the_default_model_on_the_cpu_decodes_with_it(default_llm) -> None:
    assert default_llm.model.config._attn_implementation == ATTENTION_NAME
