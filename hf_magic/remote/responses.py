"""A server's ``chat_completion`` replies, whole or streamed, as ChatDeltas: text, tool calls, logprobs, usage."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call

from ..backend import ChatDelta, Usage
from ..errors import EndpointError, StreamInterruptedError
from ..reasoning import ThinkTagParser, split_reasoning


def parse_output_tool_calls(raw_calls: list[Any] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A reply's tool calls as (valid, invalid): arguments that are not a JSON object are invalid, not an error."""
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    for index, call in enumerate(raw_calls or []):
        raw = _raw_tool_call(call, index)
        try:
            parsed = parse_tool_call(raw, return_id=True)
        except Exception as exc:  # langchain raises OutputParserException on bad JSON
            invalid.append(dict(make_invalid_tool_call(raw, str(exc))))
            continue
        if parsed is None or not isinstance(parsed.get("args"), dict):
            invalid.append(dict(make_invalid_tool_call(raw, "Tool call arguments are not a JSON object.")))
        else:
            valid.append(parsed)
    return valid, invalid


def _raw_tool_call(call: Any, index: int) -> dict[str, Any]:
    # TGI sends arguments as an object, OpenAI-compatible servers as a JSON string.
    function = _get(call, "function") or {}
    arguments = _get(function, "arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {})
    return {
        "id": _get(call, "id") or f"call_{index}",
        "type": "function",
        "function": {"name": _get(function, "name") or "", "arguments": arguments},
    }


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _logprobs(choice: Any) -> list[dict[str, Any]] | None:
    content = _get(_get(choice, "logprobs"), "content")
    if not content:
        return None
    return [
        {
            "token": _get(item, "token"),
            "logprob": _get(item, "logprob"),
            "top_logprobs": [
                {"token": _get(top, "token"), "logprob": _get(top, "logprob")}
                for top in _get(item, "top_logprobs") or []
            ],
        }
        for item in content
    ]


def _extra(obj: Any, key: str) -> Any:
    # huggingface_hub's output types keep fields they do not declare as attributes only, not as dict items.
    value = getattr(obj, key, None)
    return value if value is not None else _get(obj, key)


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    reasoning = _get(_extra(raw, "completion_tokens_details"), "reasoning_tokens")
    return Usage(
        input_tokens=int(_get(raw, "prompt_tokens") or 0),
        output_tokens=int(_get(raw, "completion_tokens") or 0),
        reasoning_tokens=int(reasoning) if reasoning is not None else None,
    )


def _server_reasoning(message: Any) -> str:
    """Thinking a server split off itself: ``reasoning_content`` (vLLM, SGLang, DeepSeek, ``transformers
    serve``) or ``reasoning`` (OpenRouter, newer vLLM)."""
    return str(_extra(message, "reasoning_content") or _extra(message, "reasoning") or "")


def delta_from_output(output: Any) -> ChatDelta:
    """A whole ``chat_completion`` reply as one ChatDelta."""
    choices = _extra(output, "choices") or []
    if not choices:
        raise EndpointError("The server answered without a reply (no choices): check the server's logs.")
    choice = choices[0]
    message = _extra(choice, "message")
    tool_calls, invalid = parse_output_tool_calls(_get(message, "tool_calls"))
    # A server that does not split the thinking off writes it inline, in <think> tags.
    inline, answer = split_reasoning(_get(message, "content") or "")
    return ChatDelta(
        text=answer,
        reasoning=_server_reasoning(message) + inline,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        finish_reason=_get(choice, "finish_reason") or "stop",
        usage=_usage(_extra(output, "usage")),
        logprobs=_logprobs(choice),
        model_name=_get(output, "model") or None,
    )


class StreamAssembler:
    """Turns ``chat_completion`` stream chunks into ChatDeltas and notices a stream that was cut.

    Text and tool-call chunks are passed on as they come; finish reason and usage may arrive in
    different chunks (OpenAI sends usage after the finish reason), so both go on one last delta.
    Thinking comes as ``reasoning_content`` / ``reasoning`` deltas, or inline in ``<think>`` tags.
    """

    def __init__(self) -> None:
        self._think = ThinkTagParser()
        self.text_parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model_name: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def push(self, chunk: Any) -> ChatDelta | None:
        self.model_name = _get(chunk, "model") or self.model_name
        self.usage = _usage(_extra(chunk, "usage")) or self.usage
        choices = _extra(chunk, "choices") or []
        if not choices:
            return None
        choice = choices[0]
        self.finish_reason = _get(choice, "finish_reason") or self.finish_reason
        delta = _extra(choice, "delta")
        text = _get(delta, "content") or ""
        chunks = [
            {
                "name": _get(_get(call, "function"), "name") or None,
                "args": _get(_get(call, "function"), "arguments") or None,
                "id": _get(call, "id") or None,
                "index": _get(call, "index"),
            }
            for call in _get(delta, "tool_calls") or []
        ]
        logprobs = _logprobs(choice)
        self.text_parts.append(text)
        parts = self._think.push(text)
        reasoning = _server_reasoning(delta) + parts.reasoning
        if not parts.text and not reasoning and not chunks and not logprobs:
            return None
        return ChatDelta(text=parts.text, reasoning=reasoning, tool_call_chunks=chunks, logprobs=logprobs)

    def finish(self, url: str) -> ChatDelta:
        """The last delta; a stream that ended without a finish reason was cut."""
        if self.finish_reason is None:
            raise StreamInterruptedError(
                f"The reply from {url} stopped mid-stream (no finish reason): the partial text is kept on the "
                "error as partial_text; retry, and check the server's logs.",
                partial_text=self.text,
            )
        held = self._think.finish()
        return ChatDelta(
            text=held.text,
            reasoning=held.reasoning,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model_name=self.model_name,
        )
