"""Per-token logprobs: on a tiny random-weight model against a plain forward pass, then on the default model."""

from __future__ import annotations

import math
import re

import pytest
import torch

from hf_magic.local.logprobs import GenerationLogprobs


class _IdTokenizer:
    pad_token_id = 0
    eos_token_id = 1

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(f"<{i}>" for i in ids)


def _generated_logprobs(top: int, **params) -> tuple[list[int], list[dict]]:
    from hf_magic.backend import GenerationParams
    from hf_magic.local.generation import LocalGenerator
    from hf_magic.local.kv_cache import ConversationCache
    from tests.support.tiny_models import tiny_causal_lm

    model = tiny_causal_lm()
    generator = LocalGenerator(model, _IdTokenizer(), "tiny", ConversationCache())
    request = GenerationParams(max_new_tokens=6, logprobs=True, top_logprobs=top or None, **params)
    deltas = list(generator.stream([5, 6, 7], request, reuse_cache=False))
    generated = [int(token) for token in re.findall(r"<(\d+)>", "".join(d.text for d in deltas))]
    return generated, deltas[-1].logprobs or []


def test_logprobs_are_the_models_own_log_softmax_of_each_chosen_token():
    from tests.support.tiny_models import tiny_causal_lm

    generated, entries = _generated_logprobs(top=3, do_sample=False)
    assert [entry["token"] for entry in entries] == [f"<{token}>" for token in generated] and len(entries) == 6
    sequence = torch.tensor([[5, 6, 7, *generated]])
    with torch.inference_mode():
        rows = torch.log_softmax(tiny_causal_lm()(sequence).logits[0].float(), dim=-1)  # one pass, same weights
    for step, (token, entry) in enumerate(zip(generated, entries, strict=True)):
        assert math.isclose(entry["logprob"], float(rows[2 + step, token]), abs_tol=1e-4)
        tops = entry["top_logprobs"]
        assert len(tops) == 3 and tops[0]["token"] == entry["token"]  # greedy picks the top token
        assert tops[0]["logprob"] == entry["logprob"]  # one log-softmax serves both
        assert entry["bytes"] == list(entry["token"].encode())


def test_without_top_logprobs_the_list_is_empty():
    _, entries = _generated_logprobs(top=0, do_sample=False)
    assert entries and all(entry["top_logprobs"] == [] for entry in entries)


def test_impossible_tokens_get_openais_floor_not_minus_infinity():
    from types import SimpleNamespace

    from tests.support.tiny_models import tiny_causal_lm

    logprobs = GenerationLogprobs(top=2)
    step = torch.zeros(1, 100)  # the tiny model's vocabulary
    step[0, 1] = -math.inf
    logprobs.read(tiny_causal_lm(), SimpleNamespace(sequences=torch.tensor([[2, 1]]), logits=(step,)))
    (entry,) = logprobs.entries([1], lambda ids: "x")
    assert entry["logprob"] == -9999.0


@pytest.mark.integration
def test_logprobs_on_the_default_model_match_its_greedy_choices(chat_model):
    reply = chat_model.invoke("What is the capital of France?", logprobs=True, top_logprobs=3, max_tokens=12)
    content = reply.response_metadata["logprobs"]["content"]
    assert len(content) == reply.usage_metadata["output_tokens"] or (
        len(content) == reply.usage_metadata["output_tokens"] - 1  # the end-of-turn token is not listed
    )
    assert "".join(entry["token"] for entry in content) == reply.content
    for entry in content:
        assert entry["logprob"] <= 0
        tops = entry["top_logprobs"]
        assert len(tops) == 3 and [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
        assert math.isclose(tops[0]["logprob"], entry["logprob"], abs_tol=1e-5)  # greedy picks the top token


@pytest.mark.integration
def test_logprobs_come_on_the_last_stream_chunk_and_only_when_asked(chat_model):
    chunks = list(chat_model.stream("Say hi", logprobs=True, max_tokens=6))
    assert chunks[-1].response_metadata["logprobs"]["content"]
    assert all("logprobs" not in chunk.response_metadata for chunk in chunks[:-1])
    assert "logprobs" not in chat_model.invoke("Say hi", max_tokens=4).response_metadata
