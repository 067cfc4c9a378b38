"""Attention for decoding on the CPU: torch's SDPA over the KV cache as it lies, without repeating its heads.

transformers' SDPA integration repeats each key/value head for the query heads that share it (``repeat_kv``)
before calling SDPA on the CPU, so every decoded token copies the whole context's keys and values of every
layer, several times over. A decoded token has one query row: here the query heads of each key/value head
become the rows of one SDPA call, which reads the cache in place. The arithmetic is SDPA's; prefills (more
than one row) go to transformers' SDPA unchanged. Exact KV-cache reuse does not rest on this (``kv_cache.py``):
a fresh prefill and a reused turn decode through the same function with the same shapes.
"""

from __future__ import annotations

from typing import Any

ATTENTION_NAME = "hf_magic_sdpa"
"""The ``attn_implementation`` name under which transformers finds it."""

# Arguments only transformers' own code handles; a layer that sets one is handed to it.
_UNSUPPORTED = ("softcap", "s_aux", "sinks", "position_bias", "head_mask")


def register() -> str:
    """Make ``attn_implementation="hf_magic_sdpa"`` available to transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, grouped_decode_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


def grouped_decode_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention interface: ``query`` (batch, heads, rows, dim), ``key``/``value`` (batch,
    kv_heads, keys, dim); returns (batch, rows, heads, dim) and no weights."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, rows, dim = query.shape
    kv_heads = key.shape[1]
    if (
        rows != 1
        or heads == kv_heads
        or (dropout and module.training)
        or any(kwargs.get(name) is not None for name in _UNSUPPORTED)
        or (attention_mask is not None and attention_mask.shape[1] != 1)
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    # A (batch, 1, 1, keys) mask applies to every head and row alike.
    output = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, scale=scaling
    )
    return output.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2), None
