"""Chat models of each reasoning family for tests: the default model's tokenizer given a family's chat template
(tests/data/chat_templates) and its marker tokens, over a tiny random-weight model or a scripted one."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent.parent / "data" / "chat_templates"

# Each family's markers: (added as ordinary tokens, added as special tokens).
FAMILY_TOKENS: dict[str, tuple[list[str], list[str]]] = {
    "qwen3_style": (["<think>", "</think>", "<tool_call>", "</tool_call>"], []),
    "r1_style": (["<think>", "</think>", "<|User|>", "<|Assistant|>"], ["<|end_of_sentence|>"]),
    "gpt_oss_style": (
        [],
        ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>"],
    ),
    "mistral_style": ([], ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]),
    "llama3_style": ([], ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"]),
}
# A response_template of the declarative kind transformers reads (written for these tests): <think> thinking,
# Hermes tool calls, the answer up to <|im_end|>.
THINK_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "reasoning_content": {"open": "<think>", "close": "</think>", "content": "text"},
        "tool_calls": {
            "open_pattern": r"\s*<tool_call>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"\s*<\|im_end\|>", "content": "text"},
    },
}
# The end-of-reply marker each family's model generates last.
FAMILY_EOS = {"r1_style": "<|end_of_sentence|>", "gpt_oss_style": "<|return|>", "llama3_style": "<|eot_id|>"}


@lru_cache(maxsize=1)
def _default_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from hf_magic.local.loading import default_model_dir

    return AutoTokenizer.from_pretrained(default_model_dir())


def family_tokenizer(family: str) -> Any:
    """The default model's tokenizer with ``family``'s chat template, marker tokens and end marker."""
    tokenizer = copy.deepcopy(_default_tokenizer())
    plain, special = FAMILY_TOKENS[family]
    tokenizer.add_tokens(plain)
    tokenizer.add_tokens(special, special_tokens=True)
    if family in FAMILY_EOS:
        tokenizer.eos_token = FAMILY_EOS[family]
    tokenizer.chat_template = (TEMPLATES / f"{family}.jinja").read_text()
    return tokenizer


def prewritten_think_tokenizer() -> Any:
    """The default model's own tokenizer and template, except that the prompt pre-writes ``<think>``."""
    tokenizer = copy.deepcopy(_default_tokenizer())
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "{{ '<|im_start|>assistant\n' }}", "{{ '<|im_start|>assistant\n<think>\n' }}"
    )
    assert tokenizer.chat_template.count("<think>") == 1
    return tokenizer


def thinking_by_default_tokenizer() -> Any:
    """The qwen3_style tokenizer whose prompt pre-writes ``<think>`` unless ``enable_thinking=False`` (which
    pre-writes an empty, closed block), carrying ``THINK_RESPONSE_TEMPLATE``."""
    tokenizer = family_tokenizer("qwen3_style")
    closed = "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    assert closed in tokenizer.chat_template
    tokenizer.chat_template = tokenizer.chat_template.replace(
        closed + "{% endif %}", closed + "{% else %}<think>\n{% endif %}"
    )
    tokenizer.response_template = THINK_RESPONSE_TEMPLATE
    return tokenizer


def tiny_chat_llm(tokenizer: Any, max_new_tokens: int = 24) -> Any:
    """A HuggingFacePipeline over a tiny random-weight Llama sized to ``tokenizer``'s vocabulary (greedy)."""
    from transformers import pipeline

    from hf_magic import HuggingFacePipeline
    from tests.support.tiny_models import tiny_causal_lm

    model = tiny_causal_lm("Llama", vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    return HuggingFacePipeline(pipeline=pipe, pipeline_kwargs={"max_new_tokens": max_new_tokens, "do_sample": False})


def script_replies(llm: Any, monkeypatch: Any, reply: str, *, eos: bool = True) -> list[list[int]]:
    """Make ``llm`` generate the tokens of ``reply`` (then its end marker) one at a time, whatever the prompt:
    a known token stream through the real decoding, splitting and tool-call parsing. Returns the prompts seen."""
    tokenizer = llm.tokenizer
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
    prompts: list[list[int]] = []

    def generate(
        self: Any,
        input_ids: list[int],
        params: Any,
        deliver: Callable[[list[int]], None],
        cancel: Any,
        *rest: Any,
        **options: Any,
    ) -> None:
        prompts.append(list(input_ids))
        limit = params.max_new_tokens or len(ids)
        for token in ids[:limit]:
            if cancel.is_set():
                return
            deliver([token])

    from hf_magic.local.generation import LocalGenerator

    monkeypatch.setattr(LocalGenerator, "_run_generate", generate)
    return prompts
