"""HuggingFaceEndpoint against a real vLLM server (CPU build) serving the default model: what transformers serve
cannot show (tool calls, forced tool choice, response formats), and the server's own errors as one line each.

langchain-tests' standard suite against the same server is in test_standard_endpoint.py.
"""

from __future__ import annotations

import pytest

from hf_magic import ChatHuggingFace, HuggingFaceEndpoint
from tests.support.vllm import VllmServer

pytestmark = pytest.mark.integration


def test_the_served_model_answers_and_is_found_without_naming_it(vllm_server: VllmServer) -> None:
    model = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=vllm_server.url, max_new_tokens=12), temperature=0)
    reply = model.invoke("What is the capital of France?")
    streamed = "".join(str(chunk.content) for chunk in model.stream("What is the capital of France?"))
    assert reply.content and reply.content == streamed
    assert reply.response_metadata["model_name"] == vllm_server.model
    assert reply.usage_metadata is not None and 0 < reply.usage_metadata["output_tokens"] <= 12
