"""Constrained decoding for the local pipeline: forced tool calls and JSON output as xgrammar grammars.

xgrammar compiles a JSON schema (or EBNF) against the tokenizer's vocabulary once; each decoding step
then masks the tokens that would break the grammar, so even a small model's output always parses. Near the
end of the token budget the mask narrows further so that the JSON closes before ``max_new_tokens`` runs out.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..errors import InvalidInputError, SchemaError
from .tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_CACHE_SIZE = 32
# How close to the budget's end the mask starts checking that each candidate token still lets the JSON close,
# and how many of the model's best candidates it checks: one token (a "," that opens a required key, a "{"
# with required fields) can add several tokens to the shortest close, so the check starts before it is tight.
_CLOSING_WINDOW = 16
_CLOSING_CANDIDATES = 8
_CLOSING_MAX_STEPS = 256
# One character at a time towards the end of a JSON document, tried in this order: closers first, then what
# ends a value soonest. Inside a string only the quote makes progress (or a letter, under a minLength).
_CLOSERS = (b"}", b"]", b'"', b",", b"0", b"[", b"{", b"t", b"f", b"n", b"-")
_STRING_CLOSERS = (b'"', b"a")
_ANY_BYTE = tuple(bytes([b]) for b in [*range(0x20, 0x7F), *range(0x80, 0x100)])
_XGRAMMAR_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")


@dataclass(frozen=True)
class GrammarSpec:
    """What to constrain to: ``kind`` is ``"tool_call"`` or ``"json"``; ``schema`` a JSON schema."""

    kind: str
    schema: dict[str, Any]
    label: str

    @property
    def optional_tail(self) -> bytes:
        """Grammar text after the JSON that the parser can do without (the closing tool-call tag, which it
        reads even when the budget cut it): the budget need not be kept for it."""
        return ("\n" + TOOL_CALL_CLOSE).encode() if self.kind == "tool_call" else b""

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
        if not isinstance(name, str) or name not in names:
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
        # with_structured_output(schema, method="json_mode") adds the schema: held to it, not to any object.
        schema = response_format.get("schema")
        if isinstance(schema, dict):
            return GrammarSpec("json", schema, f"a JSON object of schema {schema.get('title') or 'output'!r}")
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
        self._info = info
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

    @cached_property
    def vocabulary(self) -> Vocabulary:
        """The tokenizer's vocabulary as bytes, for spelling out the text that closes the JSON."""
        return Vocabulary(self._info)

    def logits_processor(self, spec: GrammarSpec, max_new_tokens: int) -> BudgetedGrammarProcessor:
        """A transformers ``LogitsProcessor`` for one ``generate`` call of at most ``max_new_tokens`` tokens
        (it keeps per-call state)."""
        return BudgetedGrammarProcessor(self.compiled(spec), self.vocabulary, max_new_tokens, spec.optional_tail)


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


# --------------------------------------------------------------------- closing within budget
class Vocabulary:
    """Token ids by their bytes, to write a given text in as few tokens as the vocabulary allows."""

    def __init__(self, tokenizer_info: Any) -> None:
        skip = set(tokenizer_info.special_token_ids) | set(tokenizer_info.stop_token_ids)
        self.ids: dict[bytes, int] = {}
        for token_id, piece in enumerate(tokenizer_info.decoded_vocab):
            if piece and token_id not in skip:
                self.ids.setdefault(piece, token_id)
        self.longest = min(max(map(len, self.ids), default=1), 64)
        self.stop_ids = set(tokenizer_info.stop_token_ids)

    def spell(self, text: bytes) -> list[int] | None:
        """``text`` as token ids, longest known piece first; ``None`` when some byte has no token."""
        ids: list[int] = []
        start = 0
        while start < len(text):
            for end in range(min(len(text), start + self.longest), start, -1):
                token_id = self.ids.get(text[start:end])
                if token_id is not None:
                    ids.append(token_id)
                    start = end
                    break
            else:
                return None
        return ids


def closing_text(matcher: Any) -> bytes | None:
    """A short text that completes the grammar from ``matcher``'s state (the matcher is left as it was):
    it closes open strings, arrays and objects and writes the required keys still missing, each with a
    small value of its type. ``None`` when no completion was found within a bounded search.

    Greedy, one character at a time, then whatever the grammar forces (keys, ``rue`` after ``t``): the
    shortest completion is not needed, one that ends soon is.
    """
    probe = matcher.fork()
    pieces: list[bytes] = []
    for _ in range(_CLOSING_MAX_STEPS):
        if probe.is_completed():
            return b"".join(pieces)
        forced = probe.find_jump_forward_string().encode()
        if forced and probe.accept_string(forced):
            pieces.append(forced)
            continue
        step = _closing_step(probe)
        if step is None:
            return None
        pieces.append(step)
    return None


def _closing_step(probe: Any) -> bytes | None:
    """Advance ``probe`` by one byte that brings the end of the document closer; the byte, or ``None``."""
    # Inside a free string every character is accepted, "}" included, and only the quote ends it.
    in_string = _accepts(probe, b"a") and _accepts(probe, b"}")
    # Then any byte, printable ASCII first: an enum's first letter, a pattern's character class.
    for piece in (*(_STRING_CLOSERS if in_string else _CLOSERS), *_ANY_BYTE):
        if probe.accept_string(piece):
            return piece
    return None


def _accepts(probe: Any, piece: bytes) -> bool:
    if not probe.accept_string(piece):
        return False
    probe.rollback(1)
    return True


class BudgetedGrammarProcessor:
    """A transformers logits processor that keeps output in the grammar and closes it within the budget.

    Each step masks what the grammar forbids (as xgrammar's own ``contrib.hf.LogitsProcessor`` does). Within
    ``_CLOSING_WINDOW`` tokens of the point where the shortest close (``closing_text``) would no longer fit, only
    those of the model's best candidates that still leave room for a close stay allowed; once none does,
    or the close needs every token left, the close itself is written one token at a time. So a string the
    model would not end is ended with its quote, and missing required fields get small values of their type.
    """

    def __init__(
        self, compiled_grammar: Any, vocabulary: Vocabulary, max_new_tokens: int, optional_tail: bytes = b""
    ) -> None:
        self.compiled_grammar = compiled_grammar
        self.vocabulary = vocabulary
        self.max_new_tokens = max_new_tokens
        self.optional_tail = optional_tail
        self.matchers: list[Any] = []
        self._mask: Any = None
        self.steps = 0
        self.forced_close = False
        """Whether the budget made this processor write (part of) the close itself."""

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import xgrammar as xgr

        if not self.matchers:
            self.matchers = [xgr.GrammarMatcher(self.compiled_grammar) for _ in range(input_ids.shape[0])]
            self._mask = xgr.allocate_token_bitmask(input_ids.shape[0], self.compiled_grammar.tokenizer_info.vocab_size)
        else:  # the token chosen after the previous call
            for row, matcher in enumerate(self.matchers):
                if not matcher.is_terminated() and not matcher.accept_token(int(input_ids[row, -1])):
                    raise RuntimeError("The constrained decoder was handed a token its grammar does not allow.")
        self.steps += 1
        left = self.max_new_tokens - self.steps + 1  # tokens still to come, this one included
        device = scores.device
        scores = scores if device.type in ("cuda", "cpu") else scores.to("cpu")
        for row, matcher in enumerate(self.matchers):
            if not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self._mask, row)
        xgr.apply_token_bitmask_inplace(scores, self._mask.to(scores.device))
        for row, matcher in enumerate(self.matchers):
            if not matcher.is_terminated() and not matcher.is_completed():
                self._keep_room_to_close(matcher, scores[row], left)
        return scores.to(device)

    def _keep_room_to_close(self, matcher: Any, row: Any, left: int) -> None:
        """Narrow ``row`` (already grammar-masked) so that the close still fits in the ``left`` tokens."""
        need = self._closing_cost(matcher)
        if need is None or need + _CLOSING_WINDOW < left:
            return  # far from the end (or no close found: then the reply ends cut, and the caller says so)
        if need < left:
            count = min(_CLOSING_CANDIDATES, row.shape[-1])
            values, ids = row.topk(count)
            safe = [
                int(i)
                for v, i in zip(values.tolist(), ids.tolist(), strict=True)
                if v != float("-inf") and self._fits(matcher, i, left - 1)
            ]
            if safe:
                _allow_only(row, safe)
                return
        close = self._closing_tokens(matcher)
        if close:
            self.forced_close = True
            _allow_only(row, close[:1])

    def _fits(self, matcher: Any, token_id: int, left: int) -> bool:
        if token_id in self.vocabulary.stop_ids:
            return True
        probe = matcher.fork()
        if not probe.accept_token(token_id):
            return False
        need = 0 if probe.is_completed() else self._closing_cost(probe)
        return need is not None and need <= left

    def _closing_tokens(self, matcher: Any) -> list[int] | None:
        text = closing_text(matcher)
        return None if text is None else self.vocabulary.spell(text)

    def _closing_cost(self, matcher: Any) -> int | None:
        """Tokens the close needs, less an optional tail the parser reads without."""
        text = closing_text(matcher)
        if text is None:
            return None
        if self.optional_tail and self.optional_tail.endswith(text):
            return 0  # only (the rest of) the tail is left
        if self.optional_tail and text.endswith(self.optional_tail):
            text = text[: -len(self.optional_tail)]
        ids = self.vocabulary.spell(text)
        return None if ids is None else len(ids)


def _allow_only(row: Any, token_ids: list[int]) -> None:
    kept = row[token_ids].clone()
    row.fill_(float("-inf"))
    row[token_ids] = kept
