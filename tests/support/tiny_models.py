"""Randomly initialised causal LMs of a few thousand parameters: real transformers models, built in milliseconds."""

from __future__ import annotations

from typing import Any


def tiny_causal_lm(family: str = "Llama", **config: Any) -> Any:
    """``<family>ForCausalLM`` with 2 layers, 4 query heads sharing 2 key/value heads, a 100-token vocabulary
    and seed 0, in eval mode; ``config`` overrides or adds configuration fields."""
    import torch
    import transformers

    torch.manual_seed(0)
    sizes = dict(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    model_config = getattr(transformers, f"{family}Config")(**{**sizes, **config})
    return getattr(transformers, f"{family}ForCausalLM")(model_config).eval()
