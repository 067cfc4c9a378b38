"""Local generation without the default model: a tiny random-weight model and a stand-in tokenizer."""

from __future__ import annotations

import pytest

from hf_magic.backend import ChatRequest, GenerationParams
from hf_magic.errors import InvalidInputError
from hf_magic.local.generation import LocalGenerator
from hf_magic.local.kv_cache import ConversationCache
from hf_magic.local.pipeline import HuggingFacePipeline, LoadedModel
from tests.support.tiny_models import tiny_causal_lm


class _IdTokenizer:
    """Each id decodes to ``<id>``: enough to read which tokens were generated."""

    pad_token_id = 0
    eos_token_id = 1

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(f"<{i}>" for i in ids)


def _generate(params: GenerationParams) -> str:
    generator = LocalGenerator(tiny_causal_lm(), _IdTokenizer(), "tiny", ConversationCache())
    return "".join(delta.text for delta in generator.stream([5, 6, 7], params, reuse_cache=False))


def test_logit_bias_reaches_the_model_as_transformers_sequence_bias():
    plain = _generate(GenerationParams(max_new_tokens=4, do_sample=False))
    biased = _generate(GenerationParams(max_new_tokens=4, do_sample=False, logit_bias={42: 100}))
    assert biased == "<42>" * 4 and plain != biased


@pytest.mark.parametrize("name", ["presence_penalty", "frequency_penalty"])
def test_penalties_transformers_lacks_are_refused_in_one_line_naming_the_alternative(name):
    llm = HuggingFacePipeline(pipeline=LoadedModel(tiny_causal_lm(), _IdTokenizer()))
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], params=GenerationParams(**{name: 0.5}))
    with pytest.raises(InvalidInputError, match=f"{name} is not supported.*repetition_penalty") as caught:
        llm.stream_chat(request)
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidInputError, match=name):
        llm.invoke("hi", **{name: 0.5})


def test_batch_size_other_than_one_is_refused_in_one_line():
    with pytest.raises(InvalidInputError, match="batch_size=4 is not supported") as caught:
        HuggingFacePipeline(pipeline=LoadedModel(None, None), batch_size=4)
    assert "\n" not in str(caught.value)
    assert HuggingFacePipeline(pipeline=LoadedModel(None, None), batch_size=1).batch_size == 1
