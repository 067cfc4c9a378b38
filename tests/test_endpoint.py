"""HuggingFaceEndpoint against a real local HTTP server: request shapes, reply parsing, errors, retries, streams."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from huggingface_hub.errors import TextGenerationError
from langchain_core.messages import AIMessageChunk, HumanMessage
from pydantic import BaseModel

from hf_magic import (
    ChatHuggingFace,
    EndpointError,
    GenerationParams,
    HfMagicError,
    HuggingFaceEndpoint,
    StreamInterruptedError,
)
from hf_magic.backend import ChatRequest
from hf_magic.errors import InvalidInputError
from hf_magic.remote.clients import chat_payload, parse_stream_line
from hf_magic.remote.request_args import chat_completions_url, completion_args, known_providers, models_url
from hf_magic.remote.responses import parse_output_tool_calls
from tests.support.http_recorder import Reply, chunk, completion

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class Person(BaseModel):
    """A person."""

    name: str
    age: int


def endpoint(url: str, **kwargs) -> HuggingFaceEndpoint:
    return HuggingFaceEndpoint(endpoint_url=url, max_new_tokens=16, **kwargs)


def chat(url: str, **kwargs) -> ChatHuggingFace:
    return ChatHuggingFace(llm=endpoint(url, **kwargs))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ----------------------------------------------------------------------------- pure converters
def test_completion_args_greedy_sets_temperature_zero_and_drops_sampling():
    args = completion_args(GenerationParams(max_new_tokens=8, do_sample=False, top_p=0.5, top_k=3))
    assert args == {"max_tokens": 8, "temperature": 0.0}


def test_completion_args_sampling_stop_seed_logprobs_and_extras():
    params = GenerationParams(
        max_new_tokens=8,
        temperature=0.7,
        top_p=0.9,
        top_k=5,
        repetition_penalty=1.1,
        stop=("\n",),
        seed=3,
        logprobs=True,
        top_logprobs=2,
    )
    assert completion_args(params) == {
        "max_tokens": 8,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 3,
        "logprobs": True,
        "top_logprobs": 2,
        "extra_body": {"top_k": 5, "repetition_penalty": 1.1},
    }


def test_parse_output_tool_calls_string_dict_and_malformed_arguments():
    valid, invalid = parse_output_tool_calls(
        [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
            {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Par'}},
            {"id": "d", "type": "function", "function": {"name": "get_weather", "arguments": "[1, 2]"}},
        ]
    )
    assert [(call["id"], call["name"], call["args"]) for call in valid] == [
        ("a", "get_weather", {"city": "Paris"}),
        ("b", "get_weather", {"city": "Rome"}),
    ]
    assert [(call["id"], call["args"]) for call in invalid] == [("c", '{"city": "Par'), ("d", "[1, 2]")]
    assert all(call["error"] for call in invalid)


def test_models_url_for_each_way_of_writing_endpoint_url():
    assert models_url("http://h:1") == "http://h:1/v1/models"
    assert models_url("http://h:1/v1/") == "http://h:1/v1/models"
    assert models_url("http://h:1/v1/chat/completions") == "http://h:1/v1/models"


def test_construction_needs_a_target_and_a_valid_url():
    with pytest.raises(HfMagicError, match=r"repo_id=.*or endpoint_url="):
        HuggingFaceEndpoint()
    with pytest.raises(ValueError, match="endpoint_url must start with http"):
        HuggingFaceEndpoint(endpoint_url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="server_kwargs"):
        HuggingFaceEndpoint(endpoint_url="http://x", server_kwargs={"nonsense": 1})
    with pytest.raises(HfMagicError, match="Invalid max_new_tokens for HuggingFaceEndpoint"):
        HuggingFaceEndpoint(endpoint_url="http://x", max_new_tokens="many")


def test_an_unknown_provider_is_one_line_that_lists_the_valid_ones():
    providers = known_providers()
    assert "together" in providers and "hf-inference" in providers  # huggingface_hub still lists its providers
    with pytest.raises(InvalidInputError) as caught:
        HuggingFaceEndpoint(repo_id="org/model", provider="no-such-provider")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("Unknown provider 'no-such-provider'")
    assert all(name in message for name in providers) and "endpoint_url" in message
    for name in ("auto", providers[0]):  # the valid names pass
        HuggingFaceEndpoint(repo_id="org/model", provider=name)


def test_unknown_arguments_become_model_kwargs_and_are_sent(recorder):
    llm = HuggingFaceEndpoint(endpoint_url=recorder.url, typical_p=0.9)
    assert llm.model_kwargs == {"typical_p": 0.9}
    llm.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}]))
    assert recorder.posts()[0].body["typical_p"] == 0.9


# ------------------------------------------------------------------------ requests on the wire
def test_request_names_the_served_model_and_maps_params(recorder):
    model = chat(recorder.url, temperature=0, seed=7)
    reply = model.invoke("Hi", stop=["\n\n"])
    sent = recorder.posts()[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "served-model"  # discovered from GET /v1/models
    assert sent.body["messages"] == [{"role": "user", "content": "Hi"}]
    assert sent.body["max_tokens"] == 16
    assert sent.body["stop"] == ["\n\n"]
    assert sent.body["seed"] == 7
    assert sent.body["temperature"] == 0.0
    assert reply.content == "Hello."
    assert reply.usage_metadata == {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["model_name"] == "served-model"


def test_repo_id_with_endpoint_url_names_the_model_without_discovery(recorder):
    ChatHuggingFace.from_model_id("org/model", backend="endpoint", endpoint_url=recorder.url).invoke("Hi")
    assert [request.method for request in recorder.requests] == ["POST"]
    assert recorder.posts()[0].body["model"] == "org/model"


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("any", "required"),
        ("required", "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
        ("auto", "auto"),
    ],
)
def test_tools_and_tool_choice_are_sent_openai_shaped(recorder, tool_choice, expected):
    chat(recorder.url).bind_tools([WEATHER_TOOL], tool_choice=tool_choice).invoke("Weather in Paris?")
    body = recorder.posts()[0].body
    assert body["tools"] == [WEATHER_TOOL]
    assert body["tool_choice"] == expected


def test_json_schema_response_format_is_sent_openai_shaped(recorder):
    recorder.default = Reply(body=completion('{"name": "Ann", "age": 31}'))
    person = chat(recorder.url).with_structured_output(Person, method="json_schema").invoke("Ann is 31.")
    assert person == Person(name="Ann", age=31)
    response_format = recorder.posts()[0].body["response_format"]
    # huggingface_hub would rewrite this into TGI's {"type": "json_object", "value": ...}; servers
    # that are not Hugging Face's get OpenAI's shape.
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Person"
    assert response_format["json_schema"]["schema"]["required"] == ["name", "age"]


def test_json_mode_response_format(recorder):
    recorder.default = Reply(body=completion('{"a": 1}'))
    assert chat(recorder.url).with_structured_output(None, method="json_mode").invoke("JSON please") == {"a": 1}
    assert recorder.posts()[0].body["response_format"] == {"type": "json_object"}


def test_json_mode_with_a_schema_sends_openais_plain_json_object(recorder):
    # The schema is the local grammar's hint; a server gets OpenAI's json_object, and the parser validates.
    recorder.default = Reply(body=completion('{"name": "Ann", "age": 31}'))
    person = chat(recorder.url).with_structured_output(Person, method="json_mode").invoke("Ann is 31, as JSON.")
    assert person == Person(name="Ann", age=31)
    assert recorder.posts()[0].body["response_format"] == {"type": "json_object"}


def test_image_blocks_reach_the_server_as_image_url_parts(recorder):
    message = HumanMessage(
        content=[
            {"type": "text", "text": "What is this?"},
            {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"},
        ]
    )
    chat(recorder.url).invoke([message])
    assert recorder.posts()[0].body["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }


def test_stream_asks_for_usage(recorder):
    recorder.default = Reply(events=[chunk("Hi"), chunk(finish_reason="stop")])
    list(chat(recorder.url).stream("Hi"))
    body = recorder.posts()[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


# ----------------------------------------------------------------------------- reply parsing
def test_tool_calls_and_invalid_tool_calls_in_a_reply(recorder):
    recorder.default = Reply(
        body=completion(
            "",
            tool_calls=[
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris"}},
            ],
        )
    )
    reply = chat(recorder.url).bind_tools([WEATHER_TOOL]).invoke("Weather?")
    assert reply.tool_calls == [{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1", "type": "tool_call"}]
    assert reply.invalid_tool_calls[0]["id"] == "c2"
    assert reply.invalid_tool_calls[0]["args"] == "{city: Paris"
    assert reply.response_metadata["finish_reason"] == "tool_calls"


def test_logprobs_reach_response_metadata(recorder):
    body = completion("Hi")
    body["choices"][0]["logprobs"] = {
        "content": [{"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Hi", "logprob": -0.1}]}]
    }
    recorder.default = Reply(body=body)
    reply = chat(recorder.url).invoke("Hi", logprobs=True, top_logprobs=1)
    assert recorder.posts()[0].body["logprobs"] is True
    assert recorder.posts()[0].body["top_logprobs"] == 1
    assert reply.response_metadata["logprobs"]["content"][0]["token"] == "Hi"


def test_streamed_tool_call_chunks_aggregate_into_calls(recorder):
    def call_chunk(**call):
        return chunk(tool_calls=[{"index": 0, "type": "function", **call}])

    recorder.default = Reply(
        events=[
            call_chunk(id="c1", function={"name": "get_weather", "arguments": ""}),
            call_chunk(function={"arguments": '{"city": '}),
            call_chunk(function={"arguments": '"Paris"}'}),
            chunk(finish_reason="tool_calls"),
        ]
    )
    total: AIMessageChunk | None = None
    for piece in chat(recorder.url).bind_tools([WEATHER_TOOL]).stream("Weather?"):
        total = piece if total is None else total + piece
    assert total is not None
    assert total.tool_calls == [{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1", "type": "tool_call"}]


def test_usage_after_the_finish_chunk_lands_on_the_last_chunk(recorder):
    # OpenAI's order: the finish reason, then a chunk with no choices that carries usage.
    usage_only = {**chunk(), "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    recorder.default = Reply(events=[chunk("Hel"), chunk("lo"), chunk(finish_reason="stop"), usage_only, "[DONE]"])
    pieces = list(chat(recorder.url).stream("Hi"))
    assert "".join(piece.content for piece in pieces) == "Hello"
    assert pieces[-1].usage_metadata == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    assert pieces[-1].response_metadata["finish_reason"] == "stop"
    assert sum(1 for piece in pieces if piece.usage_metadata) == 1


def test_text_completion_interface(recorder):
    recorder.default = Reply(body=completion("Paris"))
    assert endpoint(recorder.url).invoke("The capital of France is", stop=["."]) == "Paris"
    assert recorder.posts()[0].body["stop"] == ["."]
    recorder.default = Reply(events=[chunk("Pa"), chunk("ris"), chunk(finish_reason="stop")])
    assert list(endpoint(recorder.url).stream("The capital of France is")) == ["Pa", "ris", ""]


# ------------------------------------------------------------------------------------ errors
def test_unreachable_endpoint_names_the_url():
    url = closed_port_url()
    with pytest.raises(EndpointError, match=f"Cannot reach {url}.*server is running"):
        chat(url).invoke("Hi")


async def test_unreachable_endpoint_async():
    url = closed_port_url()
    with pytest.raises(EndpointError, match=f"Cannot reach {url}"):
        await chat(url, repo_id="m").ainvoke("Hi")


def test_401_without_token_says_to_set_one(recorder):
    recorder.default = Reply(status=401, body={"error": "unauthorized"})
    with pytest.raises(EndpointError, match=r"needs a Hugging Face token \(401\).*HF_TOKEN"):
        chat(recorder.url).invoke("Hi")


def test_404_names_the_model(recorder):
    recorder.default = Reply(status=404, body={"detail": "Model not found"})
    with pytest.raises(EndpointError, match=r"Model 'org/missing' was not found at .*\(404\).*Model not found"):
        chat(recorder.url, repo_id="org/missing").invoke("Hi")


def test_422_quotes_the_server(recorder):
    recorder.default = Reply(status=422, body={"detail": "Unexpected fields in the request: {'top_k'}"})
    with pytest.raises(EndpointError, match=r"rejected the request \(422: .*top_k"):
        chat(recorder.url, top_k=3, do_sample=True).invoke("Hi")


def test_429_is_retried_honouring_retry_after(recorder):
    recorder.replies.extend([Reply(status=429, headers={"Retry-After": "1"}, body={"error": "slow down"})])
    started = time.monotonic()
    assert chat(recorder.url).invoke("Hi").content == "Hello."
    assert len(recorder.posts()) == 2
    assert time.monotonic() - started >= 1.0  # waited as asked


def test_503_gives_up_after_max_retries_and_says_loading(recorder):
    recorder.default = Reply(status=503, headers={"Retry-After": "0"}, body={"error": "Model is loading"})
    with pytest.raises(EndpointError, match=r"org/m is loading or overloaded \(503"):
        chat(recorder.url, repo_id="org/m", max_retries=2).invoke("Hi")
    assert len(recorder.posts()) == 3


def test_a_long_retry_after_is_reported_not_waited(recorder):
    recorder.default = Reply(status=429, headers={"Retry-After": "600"}, body={"error": "quota"})
    with pytest.raises(EndpointError, match=r"rate-limiting requests \(429\), it asks to retry in 600 s"):
        chat(recorder.url).invoke("Hi")
    assert len(recorder.posts()) == 1  # no retry: the caller hears at once when to come back


async def test_503_is_retried_async_and_for_streams(recorder):
    recorder.replies.extend([Reply(status=503, headers={"Retry-After": "0"}, body={"error": "loading"})])
    recorder.default = Reply(events=[chunk("Hi"), chunk(finish_reason="stop")])
    pieces = [piece async for piece in chat(recorder.url).astream("Hi")]
    assert "".join(piece.content for piece in pieces) == "Hi"
    assert len(recorder.posts()) == 2


def test_stream_cut_mid_reply_keeps_the_partial_text(recorder):
    recorder.default = Reply(events=[chunk("The capital"), chunk(" of France"), chunk(" is")], cut_after=2)
    received = []
    with pytest.raises(StreamInterruptedError) as caught:
        for piece in chat(recorder.url).stream("Hi"):
            received.append(piece.content)
    assert caught.value.partial_text == "The capital of France"
    assert "".join(received) == "The capital of France"
    assert "cut mid-stream" in str(caught.value)


def test_stream_that_ends_without_finish_reason_is_interrupted(recorder):
    recorder.default = Reply(events=[chunk("The capital")])  # a clean end, but the reply never finished
    with pytest.raises(StreamInterruptedError, match="stopped mid-stream") as caught:
        list(chat(recorder.url).stream("Hi"))
    assert caught.value.partial_text == "The capital"


async def test_stream_cut_async(recorder):
    recorder.default = Reply(events=[chunk("Par"), chunk("is"), chunk(".")], cut_after=1)
    with pytest.raises(StreamInterruptedError) as caught:
        async for _ in chat(recorder.url).astream("Hi"):
            pass
    assert caught.value.partial_text == "Par"


def test_server_error_event_mid_stream(recorder):
    recorder.default = Reply(events=[chunk("Par"), {"error": "CUDA out of memory"}])
    with pytest.raises(StreamInterruptedError, match="CUDA out of memory") as caught:
        list(chat(recorder.url).stream("Hi"))
    assert caught.value.partial_text == "Par"


# ----------------------------------------------------------------------- closing streams early
def _slow_stream() -> Reply:
    return Reply(events=[chunk(f"w{i} ") for i in range(400)], event_delay=0.02)


def test_leaving_a_stream_early_closes_the_connection(recorder):
    recorder.default = _slow_stream()
    stream = chat(recorder.url).stream("Hi")
    assert next(stream).content == "w0 "
    stream.close()
    assert recorder.disconnected.wait(timeout=5)


async def test_cancelling_an_async_stream_closes_the_connection(recorder):
    recorder.default = _slow_stream()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in chat(recorder.url).astream("Hi"):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(recorder.disconnected.wait, 5)


# ------------------------------------------------------------------ recorded real replies
# Recorded from `transformers serve` 5.24 running the default SmolLM2-135M-Instruct (greedy), replayed by the
# local server so the parsing path is checked on what the real model and server produce.
_SERVED = "/root/.cache/hf_magic/models/SmolLM2-135M-Instruct"


def _real_chunk(content: str | None = None, **extra: object) -> dict:
    delta = {"content": content} if content is not None else {"role": "assistant"}
    body = {
        "id": "6cb84143-4f27-4e6a-be4a-a147c6f19cf1",
        "choices": [{"delta": delta, "index": 0}],
        "created": 1795953604,
        "model": _SERVED,
        "object": "chat.completion.chunk",
        "system_fingerprint": "",
    }
    body.update(extra)
    return body


# "What is the capital of France?", max_tokens=12, stream=True. The server sends no "data: [DONE]".
REAL_STREAM = [
    _real_chunk(),
    *[_real_chunk(piece) for piece in ["The", " capital", " of", " France", " is", " Paris", "."]],
    _real_chunk(
        choices=[{"delta": {}, "index": 0, "finish_reason": "stop"}],
        usage={"completion_tokens": 8, "prompt_tokens": 37, "total_tokens": 45},
    ),
]


def _real_reply(content: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "id": "62d516b2-96a9-47f5-9bf0-c67054e43f6e",
        "choices": [{"finish_reason": finish_reason, "index": 0, "message": {"content": content, "role": "assistant"}}],
        "created": 1795953408,
        "model": _SERVED,
        "object": "chat.completion",
        "usage": {
            "completion_tokens": completion_tokens,
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# System "Answer only with a JSON object." + "Give the name and age of Ann, who is 31, as a JSON object with keys
# name and age.", max_tokens=40.
REAL_JSON_REPLY = _real_reply('{\n  "name": "Ann",\n  "age": 31\n}', "stop", 45, 19)
# 'Return a JSON object with keys "city" and "country" for Paris.', max_tokens=40: code, not JSON.
REAL_NOT_JSON_REPLY = _real_reply(
    "```python\ndef return_json(json_data):\n    return json.dumps(json_data)\n\n"
    "def return_json_with_country(json_data):\n    return json",
    "length",
    46,
    40,
)
# The get_weather tool described in the system prompt, "What is the weather in Paris?", max_tokens=40: no call.
REAL_NO_TOOL_CALL_REPLY = _real_reply(
    "Paris, France, is the capital of France and the largest city in the European Union. It is the capital of "
    "the 22nd département of France and the capital of the ",
    "length",
    67,
    40,
)


def test_real_stream_from_transformers_serve(recorder):
    recorder.default = Reply(events=REAL_STREAM)
    pieces = list(chat(recorder.url).stream("What is the capital of France?"))
    assert "".join(piece.content for piece in pieces) == "The capital of France is Paris."
    assert pieces[-1].usage_metadata == {"input_tokens": 37, "output_tokens": 8, "total_tokens": 45}
    assert pieces[-1].response_metadata["finish_reason"] == "stop"
    assert pieces[-1].response_metadata["model_name"] == _SERVED


def test_real_json_reply_parses_into_the_schema(recorder):
    recorder.default = Reply(body=REAL_JSON_REPLY)
    structured = chat(recorder.url).with_structured_output(Person, method="json_schema")
    assert structured.invoke("Ann is 31.") == Person(name="Ann", age=31)


def test_real_non_json_reply_is_a_parsing_error_with_the_raw_reply_kept(recorder):
    recorder.default = Reply(body=REAL_NOT_JSON_REPLY)
    structured = chat(recorder.url).with_structured_output(None, method="json_mode", include_raw=True)
    result = structured.invoke("Paris as JSON")
    assert result["parsed"] is None
    assert result["parsing_error"] is not None
    assert result["raw"].content.startswith("```python")
    assert result["raw"].response_metadata["finish_reason"] == "length"


def test_real_reply_without_a_tool_call(recorder):
    recorder.default = Reply(body=REAL_NO_TOOL_CALL_REPLY)
    reply = chat(recorder.url).bind_tools([WEATHER_TOOL]).invoke("What is the weather in Paris?")
    assert reply.tool_calls == [] and reply.invalid_tool_calls == []
    assert reply.content.startswith("Paris, France")
    structured = chat(recorder.url).with_structured_output(Person, include_raw=True)  # function_calling
    result = structured.invoke("Ann is 31.")
    assert result["parsed"] is None
    assert result["raw"].content.startswith("Paris, France")


# ------------------------------------------------------------------- the client for other servers
def test_chat_completions_url_for_each_way_of_writing_endpoint_url():
    expected = "http://127.0.0.1:8000/v1/chat/completions"
    for url in ("http://127.0.0.1:8000", "http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1", expected):
        assert chat_completions_url(url) == expected
    assert chat_completions_url("https://host/proxy?key=1") == "https://host/proxy/v1/chat/completions?key=1"


def test_chat_payload_names_a_model_drops_unset_arguments_and_merges_extra_body():
    payload = chat_payload(None, [{"role": "user", "content": "hi"}], max_tokens=8, seed=None, extra_body={"top_k": 3})
    assert payload == {"model": "dummy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "top_k": 3}
    assert next(iter(chat_payload("m", []))) == "model"  # first, so a proxy can route on it


def test_stream_lines_parse_into_chunks_until_done():
    assert parse_stream_line('data: {"choices": []}') == {"choices": []}
    assert parse_stream_line("") is None and parse_stream_line(": keep-alive") is None
    with pytest.raises(StopIteration):
        parse_stream_line("data: [DONE]")
    with pytest.raises(TextGenerationError, match="overloaded"):
        parse_stream_line('data: {"error": "overloaded"}')


def test_openai_penalties_and_logit_bias_are_sent_as_openai_fields(recorder):
    from langchain_core.messages import HumanMessage

    args = completion_args(GenerationParams(presence_penalty=0.5, frequency_penalty=-0.5, logit_bias={42: -100}))
    assert (args["presence_penalty"], args["frequency_penalty"], args["logit_bias"]) == (0.5, -0.5, {"42": -100.0})
    chat = ChatHuggingFace(llm=HuggingFaceEndpoint(endpoint_url=recorder.url), presence_penalty=0.25)
    chat.invoke([HumanMessage("hi")], logit_bias={7: 3})
    body = recorder.posts()[-1].body
    assert body["presence_penalty"] == 0.25 and body["logit_bias"] == {"7": 3.0}
