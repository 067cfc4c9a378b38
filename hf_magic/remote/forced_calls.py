"""A forced tool call asked of a server as a JSON-schema response, and the reply turned back into the tool call.

Some servers force tool calls loosely or not at all: vLLM 0.32's tool-call grammar (xgrammar structural tags)
lets the arguments' JSON hold any whitespace, so a small model writes newlines until its token budget ends, and its
guidance backend refuses every forced call (400 "Invalid grammar specification: 'triggers'"). The same servers
enforce ``response_format: json_schema`` strictly and compactly. With ``HuggingFaceEndpoint(forced_tool_calls=
"json_schema")`` a request that forces one tool (a named ``tool_choice``, or ``"required"`` with one tool) is sent
as that tool's parameter schema, and the JSON that comes back is the call's arguments: callers see a tool call.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from typing import Any, Literal

from ..backend import ChatDelta, ChatRequest
from .responses import parse_output_tool_calls

ForcedToolCalls = Literal["tool_choice", "json_schema"]


def forced_tool(request: ChatRequest) -> dict[str, Any] | None:
    """The one tool ``request`` forces (OpenAI tool shape), or None when the model may choose."""
    tools = request.tools or []
    choice = request.tool_choice
    if request.response_format is not None or not tools:
        return None
    if choice == "required" and len(tools) == 1:
        return tools[0]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((tool for tool in tools if tool.get("function", {}).get("name") == name), None)
    return None


def as_schema_request(args: dict[str, Any], tool: dict[str, Any]) -> dict[str, Any]:
    """``chat_completion`` arguments asking for ``tool``'s arguments as a JSON-schema response. The tools stay, with
    ``tool_choice="none"``: the chat template still shows the model what the tool is for and what its fields mean,
    and the server parses no tool call out of the answer."""
    function = tool["function"]
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    # The call as a model writes one ({"name": ..., "arguments": {...}}), the name fixed: a small model fills the
    # arguments better with the tool's name just written than from a bare "{".
    schema = {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    asked = {**args, "tool_choice": "none"}
    asked["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": function["name"], "schema": schema, "strict": True},
    }
    return asked


class ForcedCall:
    """Turns the answer of one reply (``{"name": ..., "arguments": {...}}``) into ``tool``'s call: whole, or as
    streamed tool-call chunks whose arguments pieces add up to the arguments' JSON."""

    def __init__(self, tool: dict[str, Any]) -> None:
        self.tool = tool
        self.name = str(tool["function"]["name"])
        self.call_id = f"call_{uuid.uuid4().hex[:24]}"
        self._prefix = re.compile(
            r'\s*\{\s*"name"\s*:\s*' + re.escape(json.dumps(self.name)) + r'\s*,\s*"arguments"\s*:\s*'
        )
        self._text = ""
        self._sent = 0
        self._started = False

    def whole(self, delta: ChatDelta) -> ChatDelta:
        self._text = delta.text
        raw = {"id": self.call_id, "function": {"name": self.name, "arguments": self._arguments(done=True)}}
        valid, invalid = parse_output_tool_calls([raw])
        return replace(delta, text="", tool_calls=valid, invalid_tool_calls=invalid)

    def chunk(self, delta: ChatDelta) -> ChatDelta:
        """``delta`` with its text as the next piece of the call's arguments; the last delta (with a finish
        reason) releases what was held back."""
        self._text += delta.text
        arguments = self._arguments(done=delta.finish_reason is not None)
        piece, self._sent = arguments[self._sent :], max(self._sent, len(arguments))
        if not piece:
            return replace(delta, text="")
        first = not self._started
        self._started = True
        call = {"name": self.name if first else None, "args": piece, "id": self.call_id if first else None, "index": 0}
        return replace(delta, text="", tool_call_chunks=[*delta.tool_call_chunks, call])

    def _arguments(self, done: bool) -> str:
        """The arguments' JSON text so far. While streaming, closing braces at the end are held back: the last one
        closes the wrapper, not the arguments. A reply that does not follow the wrapper is taken whole."""
        found = self._prefix.match(self._text)
        if found is None:
            return self._text if done else ""
        body = self._text[found.end() :]
        if not done:
            return body[: _HELD.search(body).start()]  # type: ignore[union-attr]  # matches at least ""
        closed = body.rstrip()
        return closed[:-1] if _is_json(self._text) else body


_HELD = re.compile(r"[\s}]*$")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
