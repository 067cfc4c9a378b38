"""InPlaceLayer: the same keys and values as transformers' concatenating DynamicLayer, without a copy per step."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from hf_magic.local.kv_layer import GROWTH_STEP, InPlaceLayer
from tests.support.tiny_models import tiny_causal_lm


def _states(positions: int, seed: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(batch, 2, positions, 8, generator=generator, dtype=torch.bfloat16)
    values = torch.randn(batch, 2, positions, 4, generator=generator, dtype=torch.bfloat16)  # value dim may differ
    return keys, values


def _feed(layers: list, steps: list[int], seed: int = 0, batch: int = 1) -> None:
    for index, positions in enumerate(steps):
        keys, values = _states(positions, seed + index, batch)
        returned = [layer.update(keys, values) for layer in layers]
        for got in returned[1:]:
            assert torch.equal(got[0], returned[0][0]) and torch.equal(got[1], returned[0][1])


def _same(layer: InPlaceLayer, reference: DynamicLayer) -> None:
    assert layer.get_seq_length() == reference.get_seq_length()
    assert torch.equal(layer.keys, reference.keys) and torch.equal(layer.values, reference.values)


def test_steps_append_into_one_buffer_until_it_is_full() -> None:
    layer, reference = InPlaceLayer(), DynamicLayer()
    _feed([layer, reference], [40, 1])
    storage = layer.keys.untyped_storage().data_ptr()
    _feed([layer, reference], [1] * (GROWTH_STEP - 41), seed=10)
    _same(layer, reference)
    assert layer.get_seq_length() == GROWTH_STEP
    assert layer.keys.untyped_storage().data_ptr() == storage  # no step copied the cache
    _feed([layer, reference], [1, 3], seed=500)  # past the buffer: it grows, keeping what it held
    _same(layer, reference)
    assert layer.keys.untyped_storage().data_ptr() != storage


def test_a_crop_rewinds_and_the_next_prefill_overwrites_in_place() -> None:
    layer, reference = InPlaceLayer(), DynamicLayer()
    _feed([layer, reference], [30, 1, 1, 1])
    storage = layer.keys.untyped_storage().data_ptr()
    for cache_layer in (layer, reference):
        cache_layer.crop(-12)
    _same(layer, reference)
    _feed([layer, reference], [7, 1], seed=50)
    _same(layer, reference)
    assert layer.keys.untyped_storage().data_ptr() == storage


def test_beam_search_edits_of_the_batch_start_new_buffers() -> None:
    layer, reference = InPlaceLayer(), DynamicLayer()
    _feed([layer, reference], [12, 1])
    for cache_layer in (layer, reference):
        cache_layer.batch_repeat_interleave(3)
    _feed([layer, reference], [1], seed=20, batch=3)  # the buffers no longer fit
    _same(layer, reference)
    for cache_layer in (layer, reference):
        cache_layer.reorder_cache(torch.tensor([2, 0, 0]))
    _feed([layer, reference], [1, 1], seed=30, batch=3)
    _same(layer, reference)


def test_a_cache_filled_under_inference_mode_goes_on_outside_it() -> None:
    """Tensors made under inference_mode are read-only outside it: the next step copies them out first."""
    layer, reference = InPlaceLayer(), DynamicLayer()
    with torch.inference_mode():
        _feed([layer, reference], [9, 1])
    with torch.no_grad():
        _feed([layer, reference], [1, 2], seed=40)
    _same(layer, reference)


def test_reset_drops_the_buffers() -> None:
    layer = InPlaceLayer()
    _feed([layer], [20])
    layer.reset()
    assert layer.get_seq_length() == 0
    _feed([layer], [5], seed=3)
    assert layer.get_seq_length() == 5


@pytest.mark.parametrize("num_beams", [1, 2])
def test_generate_with_in_place_layers_gives_what_the_default_cache_gives(num_beams: int) -> None:
    from transformers import DynamicCache

    from hf_magic.local.kv_cache import new_cache

    model = tiny_causal_lm("Llama")
    prompt = torch.randint(1, 100, (1, 11))
    outputs = []
    for cache in (new_cache(model), DynamicCache(config=model.config)):
        with torch.inference_mode():
            outputs.append(
                model.generate(
                    prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, min_new_tokens=10,
                    do_sample=False, num_beams=num_beams, pad_token_id=0, past_key_values=cache,
                ).tolist()
            )  # fmt: skip
    assert outputs[0] == outputs[1]
