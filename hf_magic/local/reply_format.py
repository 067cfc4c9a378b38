"""Which parser reads a local model's reply, and the chat-template switches that turn its thinking on or off.

A tokenizer that carries a ``response_template`` says itself how its replies are written: transformers'
``tokenizer.get_response_parser`` reads them (thinking, answer, tool calls). Otherwise the chat template
tells the format: gpt-oss channels, or ``<think>`` tags (pre-written by the prompt or not).
"""

from __future__ import annotations

import json
from typing import Any

from ..backend import ChatRequest
from ..reasoning import THINK_OPEN, ReplyEnd, ReplyParser, ReplyParts, ThinkTagParser
from .harmony import HarmonyParser, uses_harmony
from .tool_calls import call_from_text

# Where response templates put the thinking: transformers asks for reasoning_content, some on the hub use thinking.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class TemplateReplyParser:
    """A reply read with the tokenizer's own ``response_template``, through transformers' streaming parser."""

    keeps_special_tokens = True
    reads_tool_calls = True

    def __init__(self, tokenizer: Any, prompt: str, tools: list[dict[str, Any]] | None = None) -> None:
        # The prompt is the prefix: a template that pre-wrote <think> leaves the parser inside the thinking.
        self._parser = tokenizer.get_response_parser(prefix=prompt, tools=tools or None)
        self._thinking = False
        self._answered = False

    def push(self, text: str) -> ReplyParts:
        return self._parts(self._parser.feed(text) if text else [])

    def finish(self) -> ReplyEnd:
        message, events = self._parser.finalize()
        parts = self._parts(events)
        end = ReplyEnd(text=parts.text, reasoning=parts.reasoning)
        for index, raw in enumerate(message.get("tool_calls") or []):
            function = raw.get("function", raw) if isinstance(raw, dict) else {}
            arguments = function.get("arguments", {})
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            call, invalid = call_from_text(str(function.get("name") or f"tool_{index}"), text)
            if call is not None:
                end.tool_calls.append(call)
            elif invalid is not None:
                end.invalid_tool_calls.append(invalid)
        end.still_thinking = self._thinking and not self._answered and not end.tool_calls
        return end

    def _parts(self, events: list[dict[str, Any]]) -> ReplyParts:
        parts = ReplyParts()
        for event in events:
            name = event.get("field")
            if event.get("type") == "region_open":
                self._thinking = name in _REASONING_FIELDS
            elif event.get("type") == "region_close" and name in _REASONING_FIELDS:
                self._thinking = False
            elif event.get("type") == "region_chunk":
                if name in _REASONING_FIELDS:
                    parts.reasoning += event["text"]
                elif name == "content":
                    self._answered = True
                    parts.text += event["text"]
                # tool-call regions are read whole at the end
        return parts


def reply_parser_for(tokenizer: Any, prompt: str, tools: list[dict[str, Any]] | None = None) -> ReplyParser:
    """The parser for a reply to ``prompt``: the tokenizer's response template when it has one, else
    gpt-oss channels or ``<think>`` tags, as the chat template writes them."""
    if getattr(tokenizer, "response_template", None):
        return TemplateReplyParser(tokenizer, prompt, tools)
    if uses_harmony(getattr(tokenizer, "chat_template", None)):
        return HarmonyParser()
    return ThinkTagParser(thinking=prompt.rstrip().endswith(THINK_OPEN))


def thinking_template_kwargs(tokenizer: Any, request: ChatRequest) -> dict[str, Any]:
    """The chat-template variables that carry the request's thinking switch, for templates that read them:
    ``enable_thinking`` (Qwen3, SmolLM3...) and ``reasoning_effort`` (gpt-oss, which always thinks: "no
    thinking" is the lowest effort)."""
    template = str(getattr(tokenizer, "chat_template", None) or "")
    kwargs: dict[str, Any] = {}
    if request.thinking is not None and "enable_thinking" in template:
        kwargs["enable_thinking"] = request.thinking
    if "reasoning_effort" in template:
        effort = request.reasoning_effort or ("low" if request.thinking is False else None)
        if effort is not None:
            kwargs["reasoning_effort"] = effort
    return kwargs
