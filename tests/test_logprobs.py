"""Per-token logprobs: the recorder on hand-made scores, then on the real default model."""

from __future__ import annotations

import math

import pytest
import torch

from hf_magic.local.logprobs import LogprobsRecorder


def _decode(ids: list[int]) -> str:
    return "".join(chr(ord("a") + i) for i in ids)


def test_recorder_pairs_each_chosen_token_with_the_step_that_produced_it():
    recorder = LogprobsRecorder(top=2)
    step1 = torch.tensor([[0.0, 2.0, 1.0]])
    step2 = torch.tensor([[3.0, 0.0, 0.0]])
    assert recorder(torch.tensor([[7]]), step1) is step1  # scores pass through untouched
    recorder(torch.tensor([[7, 2]]), step2)  # token 2 was chosen at step 1
    entries = recorder.entries([2, 0], _decode)
    first = torch.log_softmax(step1[0], -1)
    assert [e["token"] for e in entries] == ["c", "a"]
    assert math.isclose(entries[0]["logprob"], float(first[2]), rel_tol=1e-6)
    assert math.isclose(entries[1]["logprob"], float(torch.log_softmax(step2[0], -1)[0]), rel_tol=1e-6)
    assert [t["token"] for t in entries[0]["top_logprobs"]] == ["b", "c"]
    assert entries[0]["bytes"] == [ord("c")]


def test_impossible_tokens_get_openais_floor_not_minus_infinity():
    recorder = LogprobsRecorder(top=2)
    recorder(torch.tensor([[0]]), torch.tensor([[0.0, -math.inf]]))
    (entry,) = recorder.entries([0], _decode)
    assert entry["top_logprobs"][1]["logprob"] == -9999.0


def test_without_top_logprobs_the_list_is_empty():
    recorder = LogprobsRecorder()
    recorder(torch.tensor([[0]]), torch.tensor([[1.0, 0.0]]))
    assert recorder.entries([0], _decode)[0]["top_logprobs"] == []


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
