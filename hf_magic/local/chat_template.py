"""OpenAI-shaped messages in the form Hugging Face chat templates read, and the prompt the template renders."""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidInputError


def content_text(content: Any) -> str:
    """The text of a message's content, whether a string or a list of content blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                raise InvalidInputError(
                    f"A local pipeline model reads text only; content block of type {block.get('type')!r} "
                    "is not supported: send text, or use an endpoint with a vision model."
                )
        return "".join(parts)
    raise InvalidInputError(f"Message content must be text or a list of content blocks, got {type(content).__name__}.")


def to_template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adapt OpenAI-shaped messages to what Hugging Face chat templates expect.

    Templates take tool-call arguments as a dict (OpenAI sends a JSON string) and text content.
    """
    adapted = []
    for message in messages:
        item: dict[str, Any] = {"role": message["role"], "content": content_text(message.get("content"))}
        if message.get("tool_calls"):
            item["tool_calls"] = [_template_tool_call(call) for call in message["tool_calls"]]
        for key in ("tool_call_id", "name"):
            if message.get(key):
                item[key] = message[key]
        if message.get("reasoning_content"):
            # Past thinking, under both names templates read (Qwen3: reasoning_content, gpt-oss: thinking);
            # each template decides whether it is sent back (most drop it from earlier turns).
            item["reasoning_content"] = item["thinking"] = message["reasoning_content"]
        adapted.append(item)
    return adapted


def _template_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function", {}))
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments) if arguments else {}
        except json.JSONDecodeError:
            function["arguments"] = arguments
    return {"id": call.get("id"), "type": "function", "function": function}


def fold_system_into_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For templates without a system role: prepend system text to the first user message."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"])
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{system}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def render_prompt(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> str:
    """The prompt text for ``messages`` (and ``tools``), ending where the assistant's reply begins.

    ``messages`` are in template form already (``to_template_messages``): converted once per request.
    ``template_kwargs`` are extra chat-template variables (``enable_thinking``, ``reasoning_effort``).
    """
    if not messages:
        raise InvalidInputError("No messages to send: pass at least one message.")
    template_messages = messages
    extra = template_kwargs or {}
    if getattr(tokenizer, "chat_template", None) is None:
        return _plain_prompt(template_messages)
    try:
        return tokenizer.apply_chat_template(
            template_messages, tools=tools or None, add_generation_prompt=True, tokenize=False, **extra
        )
    except Exception as exc:  # jinja2 TemplateError from raise_exception(), e.g. "System role not supported"
        if "system" not in str(exc).lower() or not any(m["role"] == "system" for m in template_messages):
            raise InvalidInputError(f"The model's chat template rejected these messages: {exc}") from exc
    return tokenizer.apply_chat_template(
        fold_system_into_user(template_messages),
        tools=tools or None,
        add_generation_prompt=True,
        tokenize=False,
        **extra,
    )


def _plain_prompt(messages: list[dict[str, Any]]) -> str:
    # A base model has no chat template: a readable transcript is the most neutral prompt.
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"
