"""Constrained decoding for the local pipeline: forced tool calls and JSON output as xgrammar grammars.

xgrammar compiles a JSON schema (or EBNF) against the tokenizer's vocabulary once; each decoding step
then masks the tokens that would break the grammar, so even a small model's output always parses.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError, SchemaError
from .tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_CACHE_SIZE = 32
_XGRAMMAR_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")


@dataclass(frozen=True)
class GrammarSpec:
    """What to constrain to: ``kind`` is ``"tool_call"`` or ``"json"``; ``schema`` a JSON schema."""

    kind: str
    schema: dict[str, Any]
    label: str

    @property
    def key(self) -> str:
        """A cache key: equal for equal schemas whatever their key order."""
        return self.kind + ":" + json.dumps(self.schema, sort_keys=True)


# ------------------------------------------------------------------------ what to constrain
def forced_tool_names(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> list[str]:
    """The tools a reply must call, given OpenAI-shaped ``tool_choice``; empty when a call is not forced.

    Raises:
        InvalidInputError: ``tool_choice`` names a tool that is not bound.
    """
    if not tools or tool_choice in (None, "auto", "none"):
        return []
    names = [tool["function"]["name"] for tool in tools]
    if tool_choice == "required":
        return names
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        if name not in names:
            raise InvalidInputError(f"tool_choice names {name!r}, which is not a bound tool: choose one of {names}.")
        return [name]
    raise InvalidInputError(f"Unsupported tool_choice {tool_choice!r}: use 'auto', 'none', 'required' or a tool name.")


def tool_call_schema(tools: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """JSON schema of one call ``{"name": ..., "arguments": {...}}`` to any tool in ``names``."""
    options = []
    for tool in tools:
        function = tool["function"]
        if function["name"] not in names:
            continue
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def response_format_schema(response_format: dict[str, Any] | None) -> GrammarSpec | None:
    """The grammar an OpenAI-shaped ``response_format`` asks for (``None`` for plain text).

    Raises:
        InvalidInputError: an unknown ``type`` or a ``json_schema`` without a schema.
    """
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    kind = response_format["type"]
    if kind == "json_object":
        return GrammarSpec("json", {"type": "object"}, "a JSON object")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise InvalidInputError(
                'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}: pass the schema.'
            )
        return GrammarSpec("json", schema, f"schema {spec.get('name') or schema.get('title') or 'output'!r}")
    raise InvalidInputError(f"Unsupported response_format type {kind!r}: use 'text', 'json_object' or 'json_schema'.")


def grammar_spec(
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None,
    response_format: dict[str, Any] | None,
) -> GrammarSpec | None:
    """What a request must be constrained to: a forced tool call wins over a response format."""
    names = forced_tool_names(tools, tool_choice)
    if names:
        label = f"a call of {names[0]!r}" if len(names) == 1 else f"a call of one of {names}"
        return GrammarSpec("tool_call", tool_call_schema(tools or [], names), label)
    return response_format_schema(response_format)


def build_grammar(spec: GrammarSpec) -> Any:
    """The xgrammar ``Grammar`` for ``spec``; tool calls are wrapped in the tags the parser reads.

    Raises:
        SchemaError: xgrammar cannot turn the schema into a grammar.
    """
    import xgrammar as xgr

    try:
        # Compact JSON (no free whitespace): small models otherwise tend to emit endless blank lines.
        body = xgr.Grammar.from_json_schema(spec.schema, any_whitespace=False, strict_mode=True)
    except Exception as exc:  # xgrammar reports every conversion failure as a RuntimeError
        raise SchemaError(
            f"The JSON schema for {spec.label} cannot be used for constrained decoding ({_xgrammar_reason(exc)}): "
            "simplify or fix the schema."
        ) from exc
    if spec.kind != "tool_call":
        return body
    opening = xgr.Grammar.from_ebnf(f"root ::= {json.dumps(TOOL_CALL_OPEN + chr(10))}")
    closing = xgr.Grammar.from_ebnf(f"root ::= {json.dumps(chr(10) + TOOL_CALL_CLOSE)}")
    return xgr.Grammar.concat(opening, body, closing)


def _xgrammar_reason(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return _XGRAMMAR_LOG_PREFIX.sub("", lines[0]).rstrip(".") if lines else type(exc).__name__


# -------------------------------------------------------------------------- per-model state
class GrammarConstrainer:
    """Compiles grammars for one model + tokenizer (compiled grammars cached per schema) and hands out
    a fresh logits processor for each generation."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self.tokenizer = tokenizer
        self._compiler = xgr.GrammarCompiler(info)
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def compiled(self, spec: GrammarSpec) -> Any:
        """The compiled grammar for ``spec``, compiling it on first use."""
        with self._lock:
            if spec.key in self._compiled:
                self._compiled.move_to_end(spec.key)
                return self._compiled[spec.key]
        grammar = build_grammar(spec)
        try:
            compiled = self._compiler.compile_grammar(grammar)
        except Exception as exc:
            raise SchemaError(
                f"The grammar for {spec.label} cannot be compiled ({_xgrammar_reason(exc)}): simplify the schema."
            ) from exc
        with self._lock:
            self._compiled[spec.key] = compiled
            while len(self._compiled) > _CACHE_SIZE:
                self._compiled.popitem(last=False)
        return compiled

    def logits_processor(self, spec: GrammarSpec) -> Any:
        """A transformers ``LogitsProcessor`` for one ``generate`` call (it keeps per-call state)."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.compiled(spec))


_constrainers: weakref.WeakKeyDictionary[Any, GrammarConstrainer] = weakref.WeakKeyDictionary()
_constrainers_lock = threading.Lock()


def constrainer_for(model: Any, tokenizer: Any, stop_token_ids: set[int]) -> GrammarConstrainer:
    """The (cached) constrainer of a loaded model; building the tokenizer info takes a moment."""
    with _constrainers_lock:
        found = _constrainers.get(model)
        if found is not None and found.tokenizer is tokenizer:
            return found
        # The logits row has the model's vocabulary size, which may exceed the tokenizer's.
        vocab_size = int(getattr(model.config.get_text_config(), "vocab_size", 0) or len(tokenizer))
        found = GrammarConstrainer(tokenizer, vocab_size, sorted(stop_token_ids))
        _constrainers[model] = found
        return found
