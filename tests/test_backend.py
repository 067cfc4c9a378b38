"""GenerationParams validation and merging, Usage, and joining streamed deltas."""

from __future__ import annotations

import pytest

from hf_magic import ChatDelta, GenerationParams, InvalidInputError, Usage
from hf_magic.backend import join_deltas


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_max_new_tokens_must_be_a_positive_integer(bad):
    with pytest.raises(InvalidInputError, match="max_new_tokens must be a positive integer"):
        GenerationParams(max_new_tokens=bad)


def test_negative_temperature_is_rejected():
    with pytest.raises(InvalidInputError, match="temperature"):
        GenerationParams(temperature=-0.1)


def test_merged_takes_only_what_the_override_sets():
    base = GenerationParams(max_new_tokens=512, temperature=0.7, stop=("\n",))
    merged = base.merged(GenerationParams(temperature=0.0))
    assert merged.max_new_tokens == 512
    assert merged.temperature == 0.0  # an explicit 0 is kept, not treated as unset
    assert merged.stop == ("\n",)
    assert base.merged(GenerationParams(stop=("END",))).stop == ("END",)


def test_a_more_specific_temperature_decides_sampling():
    pipeline_defaults = GenerationParams(do_sample=False)
    assert not pipeline_defaults.merged(GenerationParams(temperature=1.0)).greedy
    assert GenerationParams(do_sample=True).merged(GenerationParams(temperature=0)).greedy


@pytest.mark.parametrize(
    ("params", "greedy"),
    [
        (GenerationParams(), True),
        (GenerationParams(temperature=0), True),
        (GenerationParams(temperature=0.8), False),
        (GenerationParams(do_sample=False, temperature=0.8), True),
        (GenerationParams(do_sample=True), False),
    ],
)
def test_greedy(params, greedy):
    assert params.greedy is greedy


def test_usage_metadata_adds_up():
    assert Usage(10, 5).as_usage_metadata() == {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


def test_join_deltas_keeps_text_usage_and_finish_reason():
    joined = join_deltas(
        [ChatDelta(text="Hel"), ChatDelta(text="lo"), ChatDelta(text="", finish_reason="stop", usage=Usage(3, 2))]
    )
    assert joined.text == "Hello"
    assert joined.finish_reason == "stop"
    assert joined.usage == Usage(3, 2)


def test_logit_bias_keys_become_token_ids_and_bad_entries_are_one_line():
    assert GenerationParams(logit_bias={"42": -100, 7: 5}).logit_bias == {42: -100.0, 7: 5.0}
    for bad in ({"x": 1}, {3: 101}, {-1: 0}, [1, 2]):
        with pytest.raises(InvalidInputError) as caught:
            GenerationParams(logit_bias=bad)  # type: ignore[arg-type]
        assert "logit_bias" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["presence_penalty", "frequency_penalty"])
def test_openai_penalties_are_checked_against_their_range(name):
    assert getattr(GenerationParams(**{name: -2.0}), name) == -2.0
    with pytest.raises(InvalidInputError, match=rf"{name} must be in \[-2, 2\]"):
        GenerationParams(**{name: 3.0})


def test_token_budget_is_the_one_default_when_unset():
    from hf_magic.config import DEFAULT_MAX_NEW_TOKENS

    assert GenerationParams().token_budget == DEFAULT_MAX_NEW_TOKENS
    assert GenerationParams(max_new_tokens=7).token_budget == 7
