"""HuggingFaceEndpoint against a real vLLM server (CPU build) serving the default model: what transformers serve
cannot show (tool calls, forced tool choice, response formats), and the server's own errors as one line each.

langchain-tests' standard suite against the same server is in test_standard_endpoint.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from hf_magic import ChatHuggingFace, EndpointError, HuggingFaceEndpoint
from tests.support.chain_model import save_chain_model
from tests.support.reasoning_models import family_tokenizer
from tests.support.vllm import VllmServer, serve_vllm

pytestmark = pytest.mark.integration


def test_the_served_model_answers_and_is_found_without_naming_it(vllm_server: VllmServer) -> None:
    model = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=vllm_server.url, max_new_tokens=12), temperature=0)
    reply = model.invoke("What is the capital of France?")
    streamed = "".join(str(chunk.content) for chunk in model.stream("What is the capital of France?"))
    assert reply.content and reply.content == streamed
    assert reply.response_metadata["model_name"] == vllm_server.model
    assert reply.usage_metadata is not None and 0 < reply.usage_metadata["output_tokens"] <= 12


# ------------------------------------------------------------------------------- tool calls
def _weather_tool() -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }


def test_a_forced_tool_call_comes_back_valid_on_invoke_and_stream(vllm_server: VllmServer) -> None:
    # Through vLLM's own tool_choice: its tool grammar allows free whitespace, which the 135M model writes ("{\n    ")
    # for ~30 tokens, so the budget is generous here.
    model = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=vllm_server.url, max_new_tokens=100), temperature=0)
    forced = model.bind_tools([_weather_tool()], tool_choice="get_weather")
    reply = forced.invoke("What is the weather in Paris?")
    streamed = None
    for chunk in forced.stream("What is the weather in Paris?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert [call["name"] for call in reply.tool_calls] == ["get_weather"]
    assert isinstance(reply.tool_calls[0]["args"].get("city"), str)
    assert streamed is not None and streamed.tool_calls[0]["args"] == reply.tool_calls[0]["args"]


def test_tool_arguments_that_are_no_json_object_land_in_invalid_tool_calls() -> None:
    # vLLM without --tool-strict-level parameter leaves a named call's arguments free: the 135M model then writes a
    # JSON string ('"Paris"'), which is no arguments object. hf_magic must report it, not raise or drop it.
    with serve_vllm("default", "--tool-strict-level", "auto") as server:
        model = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=server.url, max_new_tokens=100), temperature=0)
        raw = httpx2.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": server.model, "max_tokens": 100, "temperature": 0, "tools": [_weather_tool()],
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            },
            timeout=120,
        ).json()  # fmt: skip
        arguments = raw["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        assert not isinstance(json.loads(arguments), dict), f"the server now answers an object: {arguments}"
        reply = model.bind_tools([_weather_tool()], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert reply.tool_calls == [] and [call["name"] for call in reply.invalid_tool_calls] == ["get_weather"]
    invalid = reply.invalid_tool_calls[0]
    assert not isinstance(json.loads(invalid["args"]), dict) and "not a JSON object" in invalid["error"]


# ------------------------------------------------------------------------------- server errors
def test_a_prompt_longer_than_the_context_is_one_line_naming_the_server(vllm_server: VllmServer) -> None:
    model = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=vllm_server.url, max_new_tokens=8))
    with pytest.raises(EndpointError) as caught:
        model.invoke("Paris " * 5000)  # ~5000 tokens against --max-model-len 4096
    message = str(caught.value)
    assert "\n" not in message and "(400" in message and vllm_server.url in message
    assert "4096" in message and "change the argument it names" in message


def test_an_unknown_model_is_one_line_saying_what_to_check(vllm_server: VllmServer) -> None:
    model = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=vllm_server.url, repo_id="org/not-served"))
    with pytest.raises(EndpointError) as caught:
        model.invoke("Hi")
    message = str(caught.value)
    assert "\n" not in message and "(404" in message and "'org/not-served' was not found" in message


# ------------------------------------------------------------------------------- reasoning
# A model that writes this chain after any prompt (tests/support/chain_model.py), with the qwen3_style template.
THINKING, ANSWER = ["<think>", "Let", " me", " count", "</think>"], ["Paris", "."]


@pytest.fixture(scope="module")
def thinking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    folder = tmp_path_factory.mktemp("chain-thinker")
    save_chain_model(folder, family_tokenizer("qwen3_style"), THINKING + ANSWER)
    with serve_vllm(str(folder), "--reasoning-parser", "qwen3") as server:
        yield server


def test_vllms_reasoning_parser_splits_the_thinking_on_invoke_and_stream(thinking_server: VllmServer) -> None:
    model = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=thinking_server.url, max_new_tokens=16), temperature=0)
    reply = model.invoke("What is the capital of France?")
    streamed = None
    for chunk in model.stream("What is the capital of France?"):
        streamed = chunk if streamed is None else streamed + chunk
    thinking = "".join(THINKING[1:-1])
    assert reply.content == "".join(ANSWER) and reply.additional_kwargs["reasoning_content"].strip() == thinking
    assert streamed is not None and streamed.content == reply.content
    assert streamed.additional_kwargs["reasoning_content"] == reply.additional_kwargs["reasoning_content"]
