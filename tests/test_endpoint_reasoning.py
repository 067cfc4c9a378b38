"""A real server that splits the thinking off: ``transformers serve`` with a tiny random-weight model whose
tokenizer carries a response template and whose chat template pre-writes ``<think>`` unless told not to think."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
from tests.support.reasoning_models import thinking_by_default_tokenizer
from tests.support.serve import serve_transformers
from tests.support.tiny_models import tiny_causal_lm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def thinker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("tiny-thinker")
    tokenizer = thinking_by_default_tokenizer()
    model = tiny_causal_lm("Llama", vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with serve_transformers(folder) as url:
        yield url


def chat(url: str) -> ChatHuggingFace:
    return ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=url, max_new_tokens=12, temperature=0))


def test_server_reasoning_content_is_the_thinking_and_streams_as_it_comes(thinker_url):
    invoked = chat(thinker_url).invoke("Hi")
    chunks = list(chat(thinker_url).stream("Hi"))
    streamed = chunks[0]
    for piece in chunks[1:]:
        streamed += piece
    # The prompt opened <think>: everything the random model writes is thinking until it writes </think>.
    thought = invoked.additional_kwargs["reasoning_content"]
    # (the server streams the newline after the pre-written <think> but strips it from whole replies)
    assert thought.strip() and streamed.additional_kwargs["reasoning_content"].strip() == thought.strip()
    assert streamed.content == invoked.content
    assert sum(1 for c in chunks if c.additional_kwargs.get("reasoning_content")) > 1  # piece by piece


def test_no_think_reaches_the_servers_chat_template(thinker_url):
    message = chat(thinker_url).invoke("Hi", enable_thinking=False)
    # The template pre-wrote a closed, empty block: the reply is all answer.
    assert not message.additional_kwargs.get("reasoning_content") and message.content
