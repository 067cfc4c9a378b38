"""A real Llama checkpoint that writes a chosen token chain, for servers (vLLM) that load models from disk.

Built offline in a second: every layer adds nothing (zero output projections), so the last hidden state is the last
token's embedding; each token of the chain has its own basis direction, every other token shares a "start"
direction, and the output head maps each direction to the next token of the chain. The first token follows any
prompt, the chain then runs to its end marker. The winning logit leads by the whole scale (about 1000 against 0), so
no CPU's rounding can change a token: the text is known by construction, not recorded from a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_SCALE = 64.0


def save_chain_model(folder: Path, tokenizer: Any, chain: list[str]) -> list[int]:
    """Save a LlamaForCausalLM + ``tokenizer`` in ``folder`` that, after any prompt, generates ``chain`` (each
    string one token of ``tokenizer``), then ``tokenizer.eos_token``. Returns the chain's token ids."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = [_single_token(tokenizer, text) for text in chain] + [tokenizer.eos_token_id]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Each token may appear once in the chain: {chain}")
    hidden = 128  # vLLM's CPU attention takes head sizes of 32 and up: 2 heads of 64
    if len(ids) >= hidden:
        raise ValueError(f"A chain holds at most {hidden - 1} tokens.")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=256, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.model.norm.weight.fill_(1.0)
        model.model.layers[0].input_layernorm.weight.fill_(1.0)
        model.model.layers[0].post_attention_layernorm.weight.fill_(1.0)
        start = len(ids) - 1  # the direction of every token outside the chain but the last (the end marker)
        model.model.embed_tokens.weight[:, start] = _SCALE
        head = model.lm_head.weight
        head[ids[0], start] = _SCALE
        for position, token in enumerate(ids[:-1]):
            model.model.embed_tokens.weight[token] = 0
            model.model.embed_tokens.weight[token, position] = _SCALE
            head[ids[position + 1], position] = _SCALE
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ids


def _single_token(tokenizer: Any, text: str) -> int:
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(encoded) != 1:
        raise ValueError(f"{text!r} is {len(encoded)} tokens for this tokenizer, not one.")
    return int(encoded[0])
