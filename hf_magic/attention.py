"""Split-invariant attention: a token's result does not depend on how its sequence was cut into forward passes.

KV-cache reuse (``kv_cache.py``) prefills a conversation in pieces: the history came from earlier turns, only
the new tokens go through the model now. Its replies must equal a fresh prefill's, bit for bit. PyTorch's CPU
SDPA kernel does not give that: on the default model in bf16, a prefill cut in two gave logits up to 0.59 off
those of one pass, enough to flip greedy near-ties (the comparison in ``tests/test_attention.py``, run with SDPA).
Here each row is ``softmax(q @ k.T) @ v`` with the softmax in float32, and a row's rounding is then the same in
any multi-token piece: prefills cut anywhere give logits identical to one pass (``tests/test_attention.py``).

A single decoded row is never kept for reuse (``kv_cache.MIN_PREFILL``): it needs the same result at the same
context length on every path, not split invariance. It goes to SDPA with the query heads that share a key/value
head as its rows, reading the keys where they lie instead of repeating or copying them: several times faster
at long contexts, and within rounding of transformers' SDPA (a few decode steps of the default model round
differently, by about 0.002). Causal prefills here skip, block by block, the keys after each block's last row
(``benchmarks/run.py --only attention`` measures both against transformers' SDPA).
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

ATTENTION_NAME = "hf_magic"
"""The ``attn_implementation`` name under which transformers finds this kernel."""

QUERY_BLOCK = 128
"""Query rows per block: bounds the float32 score matrix (rows x heads x keys) of a long prefill."""

# Arguments this kernel does not implement; a model that sets one gets its own eager attention instead.
_UNSUPPORTED = ("softcap", "s_aux", "sinks", "position_bias")


def register() -> str:
    """Make ``attn_implementation="hf_magic"`` available to transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, split_invariant_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


def split_invariant_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention in transformers' interface: ``query`` (batch, heads, rows, dim), ``key``/``value`` (batch,
    kv_heads, keys, dim), ``attention_mask`` boolean (batch, 1, rows, keys) or None; returns (batch, rows,
    heads, dim) and no weights."""
    import torch

    rows, keys = query.shape[2], key.shape[2]
    if (
        any(kwargs.get(name) is not None for name in _UNSUPPORTED)
        or (dropout and module.training)
        or (query.requires_grad and torch.is_grad_enabled())  # the scratch buffers take no gradients
        or (attention_mask is not None and (attention_mask.dtype != torch.bool or attention_mask.shape[1] != 1))
    ):
        return _eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if rows == 1:
        return _decoded_row_attention(query, key, value, attention_mask, scale), None
    # Causal attention is applied block by block, cheaper than a dense mask over every row and key: with no
    # mask it is SDPA's ``is_causal`` (row i sees keys 0..i); a mask that says no more than causal attention
    # aligned on the last key (a prefill continuing a cache) becomes that, shifted by the cached keys.
    offset = 0
    if attention_mask is not None and getattr(module, "is_causal", True) and _is_plain_causal(attention_mask):
        attention_mask, offset = None, keys - rows
    causal = attention_mask is None and getattr(module, "is_causal", True)
    return _blocked_attention(query, key, value, attention_mask, causal, offset, scale), None


def _decoded_row_attention(query: Any, key: Any, value: Any, mask: Any, scale: float) -> Any:
    """One query row per sequence: SDPA per key/value head, the query heads sharing it as its rows. The keys and
    values are read where they lie, views with spare room after them included (``kv_layer.py``)."""
    import torch

    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # a view for the models seen so far
    # A (batch, 1, 1, keys) mask applies to every head and row alike.
    output = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scale)
    return output.view(batch, heads, 1, value.shape[-1]).transpose(1, 2)


def _blocked_attention(query: Any, key: Any, value: Any, mask: Any, causal: bool, offset: int, scale: float) -> Any:
    """``softmax(q @ k.T) @ v`` over blocks of query rows, each against the keys it can see (with ``causal``,
    row i sees keys 0..offset+i).

    Keys and values may be views with spare room after them (``kv_layer.py``): each block reads a contiguous
    copy of the ones it sees, made in scratch memory. oneDNN would copy them anyway (it takes a batched
    operand only when its batch stride is its matrix size), but into a fresh allocation, and in a growing
    conversation each is larger than any freed before, so glibc maps new zeroed pages for it every time."""
    import torch

    batch, heads, rows, dim = query.shape
    kv_heads, keys, value_dim = key.shape[1], key.shape[2], value.shape[-1]
    groups = heads // kv_heads
    # The query heads that share a key/value head become rows of one matmul: no repeated keys, and even a
    # single decoded token is a multi-row product, as in a prefill.
    grouped = query.view(batch, kv_heads, groups, rows, dim)
    most = batch * kv_heads * groups * min(rows, QUERY_BLOCK)  # rows of the largest block's matmuls
    queries_buffer = _workspace("queries", most * dim, query.dtype, query.device)
    scores_buffer = _workspace("scores", most * keys, query.dtype, query.device)
    softmax_buffer = _workspace("softmax", most * keys, torch.float32, query.device)
    output = query.new_empty(batch, kv_heads, groups, rows, value_dim)
    for start in range(0, rows, QUERY_BLOCK):
        end = min(rows, start + QUERY_BLOCK)
        count = end - start
        block_mask = None if mask is None else mask[:, :, start:end]
        if causal:
            seen = min(end + offset, keys)
        elif block_mask is not None and rows > 1:
            seen = _visible_extent(block_mask)
        else:
            seen = keys
        size = batch * kv_heads * groups * count
        block_queries = queries_buffer[: size * dim].view(batch, kv_heads, groups, count, dim)
        torch.mul(grouped[:, :, :, start:end], scale, out=block_queries)
        scores = scores_buffer[: size * seen].view(batch, kv_heads, groups * count, seen)
        block_keys = _prefix("keys", key, seen)
        torch.matmul(block_queries.view(batch, kv_heads, groups * count, dim), block_keys.mT, out=scores)
        by_row = scores.view(batch, kv_heads, groups, count, seen)
        if causal:  # only the block's diagonal square holds future keys
            future = torch.ones(count, count, dtype=torch.bool, device=query.device).triu_(1)
            by_row[..., seen - count :].masked_fill_(future, torch.finfo(query.dtype).min)
        elif block_mask is not None:
            by_row.masked_fill_(~block_mask[:, :, None, :, :seen], torch.finfo(query.dtype).min)
        # In float32: the bf16 softmax kernel sums a row differently depending on its length.
        probabilities = softmax_buffer[: size * seen].view(scores.shape)
        torch.softmax(scores, dim=-1, dtype=torch.float32, out=probabilities)
        weights = scores.copy_(probabilities)  # back to the model's dtype, in the scores' memory
        block = torch.matmul(weights, _prefix("values", value, seen))
        output[:, :, :, start:end] = block.view(batch, kv_heads, groups, count, value_dim)
    return output.view(batch, heads, rows, value_dim).transpose(1, 2)


def _eager(module: Any, query: Any, key: Any, value: Any, mask: Any, **kwargs: Any) -> tuple[Any, Any]:
    """The model's own eager attention (it implements what this kernel does not), else transformers' SDPA;
    both take an additive float mask, and eager reads a missing one as no masking at all."""
    import torch

    rows, keys = query.shape[2], key.shape[2]
    if mask is None and rows > 1 and getattr(module, "is_causal", True):
        mask = torch.ones(rows, keys, dtype=torch.bool, device=query.device).tril_()[None, None]
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.where(mask, 0.0, torch.finfo(query.dtype).min).to(query.dtype)
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward as eager
    return eager(module, query, key, value, mask, **kwargs)


_buffers = threading.local()


def release_workspace() -> None:
    """Free the calling thread's scratch buffers (after unloading a model; they grow back when needed)."""
    _buffers.__dict__.pop("store", None)


def _workspace(name: str, size: int, dtype: Any, device: Any) -> Any:
    """A flat scratch tensor of ``size`` elements, kept per thread and grown as needed: allocating the
    multi-megabyte score blocks afresh each time costs more in page faults than the arithmetic does.
    Bounded by the longest context seen: QUERY_BLOCK x heads x keys x 6 bytes (bf16 scores, float32 softmax),
    and one layer's keys and values (``_prefix``)."""
    import torch

    store: dict[tuple[str, Any, Any, bool], Any] = _buffers.__dict__.setdefault("store", {})
    # A buffer made under inference_mode cannot be written outside it (a no_grad forward, say): one of each.
    key = (name, dtype, device, torch.is_inference_mode_enabled())
    buffer = store.get(key)
    if buffer is None or buffer.numel() < size:
        buffer = store[key] = torch.empty(size, dtype=dtype, device=device)
    return buffer[:size]


def _prefix(name: str, states: Any, length: int) -> Any:
    """``states[:, :, :length]`` (batch, heads, positions, dim), contiguous: itself when it already is, else a
    copy in the ``name`` scratch buffer."""
    view = states[:, :, :length]
    if view.is_contiguous():
        return view
    copy = _workspace(name, view.numel(), view.dtype, view.device).view(view.shape)
    return copy.copy_(view)


_masks = threading.local()


def _is_plain_causal(mask: Any) -> bool:
    """Whether a boolean (batch, 1, rows, keys) mask lets each row see exactly the keys up to its own position,
    counted from the last key: transformers' mask for a prefill continuing a cache, without padding. Every
    layer of a forward pass gets the same mask, so the answer is remembered for the last mask asked about."""
    import torch

    last = getattr(_masks, "last", None)
    if last is not None and last[0]() is mask:
        return bool(last[1])
    rows, keys = mask.shape[-2], mask.shape[-1]
    causal = torch.ones(rows, keys, dtype=torch.bool, device=mask.device).tril_(keys - rows)
    answer = bool(torch.equal(mask, causal.expand_as(mask)))
    _masks.last = (weakref.ref(mask), answer)
    return answer


def _visible_extent(block_mask: Any) -> int:
    """One past the last key any row of the block may see: a causal block skips the keys after its last row."""
    visible = block_mask.any(dim=-2).flatten(0, 1).any(dim=0)
    last = int(visible.nonzero().max()) if bool(visible.any()) else 0
    return last + 1
