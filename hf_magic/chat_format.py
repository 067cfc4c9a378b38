"""The one conversion between langchain values and the OpenAI chat format every backend speaks.

Messages go out as OpenAI-shaped dicts (``langchain_core``'s own ``convert_to_openai_messages``: images as
``image_url`` parts, tool calls with JSON-string arguments); replies come back as ``ChatDelta`` and become
``AIMessage`` / ``AIMessageChunk`` here. Pure functions, tested on their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_openai_messages,
)

from .backend import ChatDelta
from .errors import InvalidInputError

PROVIDER = "huggingface"

_SUPPORTED = (SystemMessage, HumanMessage, AIMessage, ToolMessage, ChatMessage)


def convert_message_to_dict(message: BaseMessage) -> dict[str, Any]:
    """One langchain message as an OpenAI-shaped chat message dict.

    Raises:
        InvalidInputError: for message types a chat model cannot take (e.g. FunctionMessage).
    """
    if not isinstance(message, _SUPPORTED):
        raise InvalidInputError(
            f"Messages of type {type(message).__name__} are not supported: use SystemMessage, HumanMessage, "
            "AIMessage or ToolMessage."
        )
    converted: dict[str, Any] = convert_to_openai_messages(message)
    for index, call in enumerate(converted.get("tool_calls") or []):
        # Templates and servers pair a tool result with its call by id: a call made without one still needs one.
        call["id"] = call.get("id") or f"call_{index}"
    reasoning = message.additional_kwargs.get("reasoning_content") if isinstance(message, AIMessage) else None
    if isinstance(reasoning, str) and reasoning:
        converted["reasoning_content"] = reasoning  # the backend sends it back only as the model expects
    return converted


def convert_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """A conversation as OpenAI-shaped message dicts, the form a ``ChatRequest`` carries.

    Raises:
        InvalidInputError: no messages, or a message type a chat model cannot take.
    """
    if not messages:
        raise InvalidInputError("No messages to send: pass at least one message.")
    return [convert_message_to_dict(message) for message in messages]


def _response_metadata(delta: ChatDelta) -> dict[str, Any]:
    metadata: dict[str, Any] = {"model_provider": PROVIDER}
    if delta.model_name:
        metadata["model_name"] = delta.model_name
    if delta.finish_reason:
        metadata["finish_reason"] = delta.finish_reason
    if delta.logprobs is not None:
        metadata["logprobs"] = {"content": delta.logprobs}
    return metadata


def _reasoning_kwargs(delta: ChatDelta) -> dict[str, Any]:
    # Where langchain-core and its integrations carry thinking; AIMessage.content_blocks turns it into a
    # "reasoning" block.
    return {"reasoning_content": delta.reasoning} if delta.reasoning else {}


def convert_delta_to_message(delta: ChatDelta) -> AIMessage:
    """A whole backend reply as an AIMessage: ``content`` is the answer, the thinking is in
    ``additional_kwargs["reasoning_content"]``."""
    return AIMessage(
        content=delta.text,
        additional_kwargs=_reasoning_kwargs(delta),
        tool_calls=delta.tool_calls,
        invalid_tool_calls=delta.invalid_tool_calls,
        usage_metadata=delta.usage.as_usage_metadata() if delta.usage else None,
        response_metadata=_response_metadata(delta),
    )


def convert_delta_to_chunk(delta: ChatDelta) -> AIMessageChunk:
    """A streamed backend delta as an AIMessageChunk; the last one carries usage and metadata."""
    last = delta.finish_reason is not None
    tool_call_chunks = list(delta.tool_call_chunks) or [
        {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": index}
        for index, call in enumerate(delta.tool_calls)
    ] + [
        {"name": call.get("name"), "args": call.get("args"), "id": call.get("id"), "index": len(delta.tool_calls) + i}
        for i, call in enumerate(delta.invalid_tool_calls)
    ]
    return AIMessageChunk(
        content=delta.text,
        additional_kwargs=_reasoning_kwargs(delta),
        tool_call_chunks=tool_call_chunks,  # type: ignore[arg-type]
        usage_metadata=delta.usage.as_usage_metadata() if delta.usage else None,  # type: ignore[arg-type]
        response_metadata=_response_metadata(delta) if last else {},
        chunk_position="last" if last else None,
    )


def normalize_tool_choice(tool_choice: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    """langchain's tool_choice forms ("any", True, a tool name...) as OpenAI's ("required", {...})."""
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True:
        if len(tools) != 1:
            raise InvalidInputError("tool_choice=True needs exactly one bound tool: name the tool instead.")
        return {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
    if tool_choice in ("any", "required"):
        return "required"
    if tool_choice in ("auto", "none"):
        return tool_choice
    if isinstance(tool_choice, str):
        names = [tool["function"]["name"] for tool in tools]
        if tool_choice not in names:
            raise InvalidInputError(f"tool_choice {tool_choice!r} is not a bound tool: choose one of {names}.")
        return {"type": "function", "function": {"name": tool_choice}}
    if isinstance(tool_choice, dict):
        return tool_choice
    raise InvalidInputError(f"Unsupported tool_choice {tool_choice!r}: use 'auto', 'any', 'required' or a tool name.")
