"""Tool calls in local models' text: describing tools in the prompt and parsing the calls back out."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..backend import ChatDelta
from ..errors import InvalidInputError
from .chat_template import render_prompt

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
MISTRAL_TOOL_CALLS = "[TOOL_CALLS]"
LLAMA_PYTHON_TAG = "<|python_tag|>"
# Markers after which a reply is tool calls to its end (Mistral, Llama 3.1 when they are not skipped as special).
_CALLS_TO_END = (MISTRAL_TOOL_CALLS, LLAMA_PYTHON_TAG)
_OPENERS = (TOOL_CALL_OPEN, *_CALLS_TO_END)

_TAGGED_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|\Z)", re.DOTALL)
# A reply that *starts* like a bare JSON call (one object or a list of them), before it is complete.
_BARE_CALL_START = re.compile(r'\A\s*(?:```(?:json)?\s*)?\[?\s*\{\s*"name"\s*:', re.DOTALL)
_CODE_FENCE = re.compile(r"\A```(?:json)?\s*(.*?)\s*```\Z", re.DOTALL)
_NAME_IN_TEXT = re.compile(r'"name"\s*:\s*"([^"]*)"')
# Mistral's newer format: [TOOL_CALLS]name[ARGS]{...}, once per call.
_MISTRAL_NAMED_CALL = re.compile(r"\s*([A-Za-z0-9_.\-]+)\[ARGS\]")

_TOOLS_PROMPT = """You can call these tools; each is described by a JSON schema:
<tools>
{tools}
</tools>
To call a tool, reply with only this, one block per call:
<tool_call>
{{"name": "<tool name>", "arguments": {{<arguments as a JSON object>}}}}
</tool_call>
Otherwise answer normally."""


@dataclass
class ParsedReply:
    """A model's reply split into the text meant for the user and the tool calls it contains."""

    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    invalid_tool_calls: list[dict[str, Any]] = field(default_factory=list)


def new_call_id() -> str:
    """An OpenAI-style tool call id (``call_<hex>``)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_tool_calls(text: str, tool_names: list[str] | None = None) -> ParsedReply:
    """Tool calls written in ``text``: ``<tool_call>{...}</tool_call>`` blocks, or a reply that is only a
    bare JSON call ``{"name": ..., "arguments"|"parameters": {...}}`` or a list of them.

    Bare JSON counts as a call only when its name is one of ``tool_names`` (when given), since an
    ordinary JSON answer could otherwise be mistaken for one. Malformed calls become
    ``invalid_tool_calls`` carrying the raw text and the reason; this function never raises.

    Example:
        >>> parse_tool_calls('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>').tool_calls[0]["args"]
        {'a': 1}
    """
    marker = next((m for m in _CALLS_TO_END if m in text), None)
    if marker is not None and (TOOL_CALL_OPEN not in text or text.find(marker) < text.find(TOOL_CALL_OPEN)):
        return _parse_calls_to_end(text, marker)
    if TOOL_CALL_OPEN in text:
        parsed = ParsedReply(content=_TAGGED_CALL.sub("", text).strip())
        for match in _TAGGED_CALL.finditer(text):
            _add_calls(parsed, _without_partial_close(match.group(1)).strip(), names=None)
        return parsed
    if not _BARE_CALL_START.match(text):
        return ParsedReply(content=text)
    body = text.strip()
    fenced = _CODE_FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    parsed = ParsedReply(content="")
    _add_calls(parsed, body, names=tool_names)
    if not parsed.tool_calls and not parsed.invalid_tool_calls:
        return ParsedReply(content=text)  # JSON that names no bound tool is an ordinary answer
    return parsed


def _parse_calls_to_end(text: str, marker: str) -> ParsedReply:
    """``answer[TOOL_CALLS][{...}]``, ``[TOOL_CALLS]name[ARGS]{...}`` or ``<|python_tag|>{...}``: calls to the end."""
    before, _, body = text.partition(marker)
    parsed = ParsedReply(content=before.strip())
    for piece in body.split(marker):
        named = list(_MISTRAL_NAMED_CALL.finditer(piece))
        if named and named[0].start() == 0:
            for index, match in enumerate(named):
                end = named[index + 1].start() if index + 1 < len(named) else len(piece)
                _add_named_call(parsed, match.group(1), piece[match.end() : end].strip())
        elif piece.strip():
            _add_calls(parsed, piece.strip().rstrip(";"), names=None)
    return parsed


def call_from_text(name: str, arguments: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """One call of tool ``name`` whose arguments are the JSON text ``arguments``: (call, None) when they
    parse to an object, else (None, invalid call with the reason)."""
    call, error = _call_from_json({"name": name, "arguments": arguments or "{}"})
    if error is not None:
        return None, _invalid(name, arguments, error)
    return call, None


def _add_named_call(parsed: ParsedReply, name: str, arguments: str) -> None:
    call, invalid = call_from_text(name, arguments)
    if call is not None:
        parsed.tool_calls.append(call)
    elif invalid is not None:
        parsed.invalid_tool_calls.append(invalid)


def _without_partial_close(body: str) -> str:
    """``body`` less a closing tag cut short by the token limit (``...}}</tool_``): the call itself is whole."""
    for size in range(len(TOOL_CALL_CLOSE) - 1, 0, -1):
        if body.endswith(TOOL_CALL_CLOSE[:size]):
            return body[:-size]
    return body


def _add_calls(parsed: ParsedReply, raw: str, names: list[str] | None) -> None:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        name = _NAME_IN_TEXT.search(raw)
        parsed.invalid_tool_calls.append(
            _invalid(name.group(1) if name else None, raw, f"Tool call is not valid JSON: {exc.msg} at char {exc.pos}.")
        )
        return
    for item in value if isinstance(value, list) else [value]:
        call, error = _call_from_json(item)
        if error is not None:
            parsed.invalid_tool_calls.append(_invalid(call.get("name"), json.dumps(item), error))
        elif names is None or call["name"] in names:
            parsed.tool_calls.append(call)


def _call_from_json(item: Any) -> tuple[dict[str, Any], str | None]:
    """A langchain ToolCall dict from one decoded call, or the reason it is not one."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return {}, 'A tool call must be a JSON object with a "name" string.'
    args = item.get("arguments", item.get("parameters", {}))
    if isinstance(args, str):  # OpenAI style: arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            return {"name": item["name"]}, f"Tool call arguments are not valid JSON: {exc.msg}."
    if not isinstance(args, dict):
        return {"name": item["name"]}, "Tool call arguments must be a JSON object."
    return {"name": item["name"], "args": args, "id": new_call_id(), "type": "tool_call"}, None


def _invalid(name: str | None, raw: str, error: str) -> dict[str, Any]:
    return {"name": name, "args": raw, "id": new_call_id(), "error": error, "type": "invalid_tool_call"}


# ---------------------------------------------------------------------------------- prompting
def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """Instructions that describe ``tools`` (OpenAI-shaped) for a model whose chat template ignores them."""
    return _TOOLS_PROMPT.format(tools="\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools))


def tool_call_text(calls: list[dict[str, Any]]) -> str:
    """An assistant message's ``tool_calls`` (template form: arguments a dict, or the raw text sent when it was
    not JSON) written the way the tools prompt asks for."""
    blocks = []
    for call in calls:
        function = call.get("function", {})
        body = json.dumps({"name": function.get("name"), "arguments": function.get("arguments")}, ensure_ascii=False)
        blocks.append(f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}")
    return "\n".join(blocks)


def with_tools_in_text(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``messages`` (template form) rewritten for a template that ignores tools: the tools described in the system
    message, earlier tool calls written into the assistant text, tool results wrapped in tags."""
    adapted: list[dict[str, Any]] = []
    for message in messages:
        item = dict(message)
        if item.get("tool_calls"):
            text = item.get("content") or ""
            calls = tool_call_text(item.pop("tool_calls"))
            item["content"] = f"{text}\n{calls}" if isinstance(text, str) and text else calls
        if item["role"] == "tool" and isinstance(item.get("content"), str):
            item["content"] = f"<tool_response>\n{item['content']}\n</tool_response>"
        adapted.append(item)
    if not tools:
        return adapted
    prompt = tools_system_prompt(tools)
    if adapted and adapted[0]["role"] == "system" and isinstance(adapted[0].get("content"), str):
        adapted[0] = {**adapted[0], "content": f"{adapted[0]['content']}\n\n{prompt}"}
    else:
        adapted.insert(0, {"role": "system", "content": prompt})
    return adapted


def prompt_messages(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages (template form) and tools to render: unchanged when the chat template handles tools itself,
    otherwise rewritten by ``with_tools_in_text`` (tools are then described in the system message)."""
    if tools and template_ignores_tools(tokenizer):
        return with_tools_in_text(messages, tools), None
    if any(m.get("tool_calls") for m in messages) and template_ignores_tool_calls(tokenizer):
        return with_tools_in_text(messages, None), tools
    return messages, tools


_PROBE_TOOL = {
    "type": "function",
    "function": {"name": "probe_tool", "description": "Probe.", "parameters": {"type": "object", "properties": {}}},
}
_PROBE_CALL = {"id": "call_probe", "type": "function", "function": {"name": "probe_tool", "arguments": {}}}


def template_ignores_tools(tokenizer: Any) -> bool:
    """True when the chat template renders the same prompt with and without tools (SmolLM2's does)."""
    probe = [{"role": "user", "content": "Hi"}]
    try:
        return render_prompt(tokenizer, probe, [_PROBE_TOOL]) == render_prompt(tokenizer, probe)
    except InvalidInputError:
        return True  # a template that rejects tools cannot use them either


def template_ignores_tool_calls(tokenizer: Any) -> bool:
    """True when the chat template drops an assistant message's ``tool_calls``."""
    plain: list[dict[str, Any]] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Ok"},
    ]
    with_call = [plain[0], {**plain[1], "tool_calls": [_PROBE_CALL]}, plain[2]]
    try:
        return render_prompt(tokenizer, with_call) == render_prompt(tokenizer, plain)
    except InvalidInputError:
        return True


# ---------------------------------------------------------------------------------- streaming
class ToolCallStream:
    """Streams a reply's text while holding back anything that may turn out to be a tool call.

    Text before a ``<tool_call>`` tag (or before the start of a bare JSON call) is shown as it
    arrives; from there on it is held, and ``finish`` parses it into content and tool calls.
    """

    def __init__(self, tool_names: list[str]) -> None:
        self._names = tool_names
        self._text = ""
        self._shown = 0

    def push(self, text: str) -> str:
        """Add streamed text; return what can be shown now."""
        self._text += text
        safe_end = self._safe_end()
        shown, self._shown = self._text[self._shown : safe_end], max(self._shown, safe_end)
        return shown

    def finish(self) -> ParsedReply:
        """The held-back text parsed: its content (not shown yet) and the tool calls."""
        return parse_tool_calls(self._text[self._shown :], self._names)

    def _safe_end(self) -> int:
        """How far the text can be shown without revealing the start of a tool call."""
        text = self._text
        tags = [at for opener in _OPENERS if (at := text.find(opener, self._shown)) >= 0]
        if tags:
            return min(tags)
        if not text[: self._shown].strip() and (not text.strip() or _could_be_bare_call(text)):
            return self._shown  # the reply so far is empty or may be a bare JSON call
        # Keep back a trailing partial opener (e.g. "<tool" or "[TOOL_").
        for size in range(min(max(map(len, _OPENERS)) - 1, len(text) - self._shown), 0, -1):
            if any(opener.startswith(text[-size:]) for opener in _OPENERS):
                return len(text) - size
        return len(text)


def _could_be_bare_call(text: str) -> bool:
    stripped = text.lstrip()
    if _BARE_CALL_START.match(text):
        return True
    # Still too short to tell: a prefix of '{"name":' or '[{"name":' or of a ```json fence.
    compact = re.sub(r"\s+", "", stripped)
    return any(start.startswith(compact) for start in ('{"name":', '[{"name":', "```json", "```"))


def attach_tool_calls(deltas: Iterator[ChatDelta], tool_names: list[str]) -> Iterator[ChatDelta]:
    """A stream of deltas with tool-call text held back and parsed into the last delta's tool calls."""
    stream = ToolCallStream(tool_names)
    for delta in deltas:
        if _filtered(stream, delta):
            yield delta


async def aattach_tool_calls(deltas: AsyncIterator[ChatDelta], tool_names: list[str]) -> AsyncIterator[ChatDelta]:
    """``attach_tool_calls`` for an async stream."""
    stream = ToolCallStream(tool_names)
    async for delta in deltas:
        if _filtered(stream, delta):
            yield delta


def _filtered(stream: ToolCallStream, delta: ChatDelta) -> bool:
    """Hold back ``delta``'s text as needed (in place); whether the delta still has anything to say."""
    delta.text = stream.push(delta.text)
    if delta.finish_reason is None:
        return bool(delta.text or delta.reasoning)
    parsed = stream.finish()
    delta.text += parsed.content
    delta.tool_calls = [*delta.tool_calls, *parsed.tool_calls]
    delta.invalid_tool_calls = [*delta.invalid_tool_calls, *parsed.invalid_tool_calls]
    if parsed.tool_calls and delta.finish_reason == "stop":
        delta.finish_reason = "tool_calls"
    return True
