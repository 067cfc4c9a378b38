"""The split-invariant attention kernel: same results however a sequence is cut, and the same attention as SDPA."""

from __future__ import annotations

import pytest

from hf_magic.attention import ATTENTION_NAME, QUERY_BLOCK
from tests.support.tiny_models import tiny_causal_lm


def _logits_in_pieces(model, ids, cuts: list[int], in_place: bool = False):
    import torch
    from transformers import DynamicCache

    from hf_magic.kv_cache import cache_keyword, new_cache

    cache = new_cache(model) if in_place else DynamicCache(config=model.config)
    start, pieces = 0, []
    with torch.inference_mode():
        for end in [*cuts, ids.shape[1]]:
            pieces.append(model(ids[:, start:end], **{cache_keyword(model): cache}, use_cache=True).logits)
            start = end
    return torch.cat(pieces, dim=1)


@pytest.mark.integration
@pytest.mark.parametrize("in_place", [False, True], ids=["concatenating cache", "in-place cache"])
@pytest.mark.parametrize("cuts", [[700], [100, 500, 897], [5, 77, 200, 331, 640, 642, 898]], ids=str)
def test_default_model_prefilled_in_pieces_gives_the_logits_of_one_pass(default_llm, cuts, in_place) -> None:
    """bf16, the default model's dtype: every piece has two tokens or more (see kv_cache.MIN_PREFILL). The
    in-place cache hands the kernel views with spare room after them (kv_layer.py)."""
    import torch

    model = default_llm.model
    assert model.config._attn_implementation == ATTENTION_NAME
    assert model.dtype == torch.bfloat16
    torch.manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size, (1, 900))
    whole = _logits_in_pieces(model, ids, [])
    assert torch.equal(_logits_in_pieces(model, ids, cuts, in_place), whole)


@pytest.mark.parametrize("rows", [2, 70, QUERY_BLOCK + 70])  # one row is a decoded one: SDPA
def test_a_plain_causal_mask_continuing_a_cache_gives_what_the_dense_mask_gives(rows: int) -> None:
    """transformers masks a prefill that continues a cache densely; the kernel applies it as causal attention
    offset by the cached keys, block by block, and must get the very same result."""
    import torch

    from hf_magic import attention

    class CausalModule:
        is_causal, training = True, False

    torch.manual_seed(0)
    keys = 300 + rows
    query = torch.randn(1, 4, rows, 16, dtype=torch.bfloat16)
    key, value = (torch.randn(1, 2, keys, 16, dtype=torch.bfloat16) for _ in range(2))
    mask = torch.ones(rows, keys, dtype=torch.bool).tril_(keys - rows)[None, None]
    assert attention._is_plain_causal(mask)
    through_kernel, _ = attention.split_invariant_attention(CausalModule(), query, key, value, mask, scaling=0.25)
    dense = attention._blocked_attention(query, key, value, mask, False, 0, 0.25)
    assert torch.equal(through_kernel, dense)
    padded = mask.clone()
    padded[..., :3] = False  # a left-padded sequence is not plain causal attention
    assert not attention._is_plain_causal(padded)


@pytest.mark.parametrize("keys", [60, 700])
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "padded mask"])
def test_a_decoded_row_does_not_depend_on_the_room_after_the_cached_keys(keys: int, masked: bool) -> None:
    """A reused conversation's buffers and a fresh prefill's have different spare room (kv_layer.py): decoding
    must read the same result from both. And it is transformers' SDPA, within rounding."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from hf_magic import attention

    class GroupedModule:
        is_causal, training, num_key_value_groups = True, False, 3

    torch.manual_seed(0)
    query = torch.randn(2, 9, 1, 64, dtype=torch.bfloat16)
    key, value = (torch.randn(2, 3, keys, 64, dtype=torch.bfloat16) for _ in range(2))
    mask = None
    if masked:
        mask = torch.ones(2, 1, 1, keys, dtype=torch.bool)
        mask[1, ..., :7] = False  # a left-padded sequence
    outputs = []
    for room in (0, 300, 1000):
        key_buffer, value_buffer = (torch.randn(2, 3, keys + room, 64, dtype=torch.bfloat16) for _ in range(2))
        key_buffer[:, :, :keys], value_buffer[:, :, :keys] = key, value
        view = (key_buffer[:, :, :keys], value_buffer[:, :, :keys])
        outputs.append(attention.split_invariant_attention(GroupedModule(), query, *view, mask, scaling=0.125)[0])
    assert all(torch.equal(output, outputs[0]) for output in outputs)
    expected, _ = sdpa_attention_forward(GroupedModule(), query, key, value, mask, scaling=0.125)
    assert torch.allclose(outputs[0].float(), expected.float(), atol=1e-2)


def test_matches_sdpa_with_padding_across_query_blocks() -> None:
    import torch

    ids = torch.randint(1, 100, (2, QUERY_BLOCK + 70))
    mask = torch.ones_like(ids)
    mask[1, :45] = 0  # a left-padded row
    outputs = {}
    for attention in (ATTENTION_NAME, "sdpa"):
        with torch.inference_mode():
            outputs[attention] = tiny_causal_lm("Llama", attention)(ids, attention_mask=mask).logits
    assert torch.allclose(outputs[ATTENTION_NAME][0], outputs["sdpa"][0], atol=1e-5)
    assert torch.allclose(outputs[ATTENTION_NAME][1, 45:], outputs["sdpa"][1, 45:], atol=1e-5)


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_generates_what_sdpa_generates(cache_implementation) -> None:
    """A static cache hands attention keys past the sequence; the mask must keep them out."""
    import torch

    prompt = torch.randint(1, 100, (1, 9))
    runs = {}
    for attention in (ATTENTION_NAME, "sdpa"):
        model = tiny_causal_lm("Llama", attention)
        with torch.inference_mode():
            runs[attention] = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, min_new_tokens=12,
                do_sample=False, pad_token_id=0, cache_implementation=cache_implementation,
            ).tolist()  # fmt: skip
    assert runs[ATTENTION_NAME] == runs["sdpa"]


def test_a_model_needing_what_the_kernel_lacks_gets_its_own_eager_attention() -> None:
    """Gemma 2 soft-caps its attention scores: the kernel hands such layers to the model's eager code."""
    import torch

    ids = torch.randint(1, 100, (1, 20))
    logits = {}
    for attention in (ATTENTION_NAME, "eager"):
        model = tiny_causal_lm("Gemma2", attention, head_dim=8, attn_logit_softcapping=5.0)
        with torch.inference_mode():
            logits[attention] = model(ids).logits
    assert torch.equal(logits[ATTENTION_NAME], logits["eager"])


@pytest.mark.integration
def test_an_explicit_attention_choice_is_kept() -> None:
    from hf_magic import HuggingFacePipeline

    llm = HuggingFacePipeline.from_model_id("default", model_kwargs={"attn_implementation": "sdpa"})
    assert llm.model.config._attn_implementation == "sdpa"


@pytest.mark.integration
def test_a_cpu_model_placed_by_device_map_auto_gets_the_split_invariant_attention() -> None:
    import torch

    from hf_magic import HuggingFacePipeline

    if torch.cuda.is_available():
        pytest.skip("device_map='auto' places the model on the GPU here")
    llm = HuggingFacePipeline.from_model_id("default", device_map="auto")
    assert llm.model.device.type == "cpu"
    assert llm.model.config._attn_implementation == ATTENTION_NAME


def test_scratch_made_under_inference_mode_does_not_break_a_no_grad_forward() -> None:
    import torch

    model = tiny_causal_lm("Llama", ATTENTION_NAME)
    ids = torch.randint(1, 100, (1, 30))
    with torch.inference_mode():
        expected = model(ids).logits
    with torch.no_grad():
        assert torch.equal(model(ids).logits, expected)


def test_release_workspace_frees_the_scratch_buffers() -> None:
    import torch

    from hf_magic import attention

    model = tiny_causal_lm("Llama", ATTENTION_NAME)
    with torch.inference_mode():
        model(torch.randint(1, 100, (1, 30)))
    assert attention._buffers.__dict__.get("store")
    attention.release_workspace()
    assert not attention._buffers.__dict__.get("store")
