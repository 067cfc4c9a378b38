"""One turn as ``LocalGenerator`` runs it, for the cache tests: a lease cut at ``starts`` (where earlier turns'
prompts ended), the earlier passes, ``generate``, then the cache kept for the next turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hf_magic.local.fast_decode import FastDecode
from hf_magic.local.kv_cache import ConversationCache, prefill_earlier_turns


def generate_turn(
    model: Any,
    store: ConversationCache,
    ids: list[int],
    starts: Sequence[int] = (),
    new_tokens: int = 6,
    reuse: bool = True,
    plan: FastDecode | None = None,
) -> tuple[list[int], Any]:
    """Generate exactly ``new_tokens`` greedily after ``ids``; returns the sequence and the stacked logits.
    With ``plan``, the turn decodes through the compiled step on a static cache laid out for this request."""
    import torch

    tensor = torch.tensor([ids])
    layout = plan.layout(len(ids), new_tokens) if plan else None
    lease = store.take(model, ids, starts, reuse=reuse, layout=layout)
    with torch.inference_mode():
        if lease is not None:
            prefill_earlier_turns(model, tensor, lease, pad_token_id=0)
        output = model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
            **(lease.generate_kwargs() if lease else {}),
            **(plan.generate_kwargs() if plan else {}),
        )
    sequence = output.sequences[0].tolist()
    if lease is not None and reuse:
        store.keep(model, lease, sequence, len(ids))
    return sequence, torch.stack(output.logits)
