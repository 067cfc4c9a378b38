"""Which grammar a request needs, what those grammars accept and how they close within the token budget
(xgrammar, no model needed); at the end, structured output on the real default model."""

from __future__ import annotations

import json
from typing import Annotated

import jsonschema
import pytest
import torch
import xgrammar as xgr
from pydantic import BaseModel, Field
from typing_extensions import TypedDict
from xgrammar.testing import _is_grammar_accept_string as accepts

from hf_magic import ChatHuggingFace, HuggingFacePipeline
from hf_magic.errors import InvalidInputError, SchemaError, StructuredOutputCutError
from hf_magic.local.constraints import (
    BudgetedGrammarProcessor,
    GrammarSpec,
    Vocabulary,
    build_grammar,
    closing_text,
    forced_tool_names,
    grammar_spec,
    response_format_schema,
    tool_call_schema,
)
from hf_magic.local.tool_calls import parse_tool_calls


def _tool(name: str, properties: dict, required: list[str]) -> dict:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": name, "parameters": parameters}}


WEATHER = _tool("get_weather", {"city": {"type": "string"}}, ["city"])
ADD = _tool("add", {"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a", "b"])
TOOLS = [WEATHER, ADD]


def _call(name: str, arguments: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def test_only_required_or_named_tool_choice_forces_a_call():
    assert forced_tool_names(TOOLS, None) == []
    assert forced_tool_names(TOOLS, "auto") == []
    assert forced_tool_names(TOOLS, "none") == []
    assert forced_tool_names(TOOLS, "required") == ["get_weather", "add"]
    assert forced_tool_names(TOOLS, {"type": "function", "function": {"name": "add"}}) == ["add"]
    assert forced_tool_names(None, "required") == []


def test_naming_an_unbound_tool_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="not a bound tool"):
        forced_tool_names(TOOLS, {"type": "function", "function": {"name": "nope"}})


def test_required_grammar_accepts_a_valid_call_of_any_bound_tool_only():
    grammar = build_grammar(grammar_spec(TOOLS, "required", None))
    assert accepts(grammar, _call("get_weather", {"city": "Paris"}))
    assert accepts(grammar, _call("add", {"a": 1, "b": 2}))
    assert not accepts(grammar, _call("add", {"a": "one", "b": 2}))  # wrong type
    assert not accepts(grammar, _call("add", {"a": 1}))  # missing required argument
    assert not accepts(grammar, _call("delete_everything", {}))  # not a bound tool
    assert not accepts(grammar, "Sure, here is the weather.")
    assert not accepts(grammar, _call("add", {"a": 1, "b": 2, "c": 3}))  # strict: no extra arguments


def test_named_tool_grammar_accepts_only_that_tool():
    grammar = build_grammar(grammar_spec(TOOLS, {"type": "function", "function": {"name": "add"}}, None))
    assert accepts(grammar, _call("add", {"a": 1, "b": 2}))
    assert not accepts(grammar, _call("get_weather", {"city": "Paris"}))


def test_what_the_grammar_accepts_the_parser_reads():
    text = _call("add", {"a": 1, "b": 2})
    assert accepts(build_grammar(grammar_spec(TOOLS, "required", None)), text)
    assert parse_tool_calls(text).tool_calls[0]["args"] == {"a": 1, "b": 2}


def test_tool_without_parameters_takes_an_empty_object():
    schema = tool_call_schema([{"type": "function", "function": {"name": "now"}}], ["now"])
    grammar = build_grammar(GrammarSpec("tool_call", schema, "now"))
    assert accepts(grammar, _call("now", {}))


def test_json_object_accepts_objects_only():
    grammar = build_grammar(response_format_schema({"type": "json_object"}))
    assert accepts(grammar, '{"a": [1, {"b": null}], "c": "d"}')
    assert not accepts(grammar, "[1, 2]")
    assert not accepts(grammar, "Here you go: {}")


def test_json_schema_response_format_follows_the_schema():
    schema = {
        "title": "Person",
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    spec = response_format_schema({"type": "json_schema", "json_schema": {"name": "Person", "schema": schema}})
    grammar = build_grammar(spec)
    assert accepts(grammar, '{"name": "Alice", "age": 31}')
    assert not accepts(grammar, '{"name": "Alice"}')
    assert not accepts(grammar, '{"name": "Alice", "age": "31"}')


def test_forced_tool_call_wins_over_response_format():
    spec = grammar_spec(TOOLS, "required", {"type": "json_object"})
    assert spec is not None and spec.kind == "tool_call"


def test_text_or_no_response_format_needs_no_grammar():
    assert grammar_spec(None, None, None) is None
    assert grammar_spec(TOOLS, "auto", {"type": "text"}) is None


@pytest.mark.parametrize(
    "response_format",
    [{"type": "xml"}, {"type": "json_schema", "json_schema": {"name": "x"}}],
)
def test_bad_response_format_is_a_clear_error(response_format):
    with pytest.raises(InvalidInputError):
        response_format_schema(response_format)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "frobnicate"},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}},
    ],
)
def test_schema_the_decoder_cannot_compile_is_a_one_line_schema_error(schema):
    spec = response_format_schema({"type": "json_schema", "json_schema": {"name": "Bad", "schema": schema}})
    with pytest.raises(SchemaError) as info:
        build_grammar(spec)
    message = str(info.value)
    assert "\n" not in message
    assert "'Bad'" in message and "simplify or fix the schema" in message
    assert "json_schema_converter.cc" not in message  # xgrammar's log prefix is stripped


def test_cache_key_ignores_key_order():
    a = GrammarSpec("json", {"type": "object", "properties": {"x": {"type": "string"}}}, "a")
    b = GrammarSpec("json", {"properties": {"x": {"type": "string"}}, "type": "object"}, "b")
    assert a.key == b.key


# ------------------------------------------------------------------ closing within the budget
# A vocabulary of single characters: every text has one spelling, so budgets count characters.
CHARS = [chr(code) for code in range(32, 127)] + ["\n", "<eos>"]
EOS = len(CHARS) - 1
JOKE_SCHEMA = {
    "title": "Joke",
    "type": "object",
    "properties": {"setup": {"type": "string"}, "punchline": {"type": "string"}},
    "required": ["setup", "punchline"],
}
JOKE_TOOL = _tool("Joke", JOKE_SCHEMA["properties"], JOKE_SCHEMA["required"])
RICH_SCHEMA = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "note": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "inner": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "colour": {"enum": ["red", "green"]}},
            "required": ["ok", "colour"],
        },
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "nothing": {"type": "null"},
        "maybe": {"type": "string"},
    },
    "required": ["count", "ratio", "note", "tags", "inner", "code", "nothing"],
}
RICH_DOC = {
    "count": -12,
    "ratio": 3.5e-2,
    "note": 'a "quoted" \\ line\nand \u00e9',
    "tags": ["x", "yz"],
    "inner": {"ok": False, "colour": "red"},
    "code": "ABC",
    "nothing": None,
}


def _json_spec(schema: dict) -> GrammarSpec:
    return response_format_schema({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})


def _compiled(spec: GrammarSpec) -> tuple[object, Vocabulary]:
    info = xgr.TokenizerInfo(CHARS, stop_token_ids=[EOS])
    return xgr.GrammarCompiler(info).compile_grammar(build_grammar(spec)), Vocabulary(info)


def _matcher_after(spec: GrammarSpec, text: str) -> object:
    matcher = xgr.GrammarMatcher(_compiled(spec)[0])
    assert matcher.accept_string(text)
    return matcher


@pytest.mark.parametrize("cut", range(len(json.dumps(RICH_DOC))))
def test_closing_text_completes_the_json_wherever_it_was_cut(cut):
    prefix = json.dumps(RICH_DOC)[:cut]  # inside strings, escapes, numbers, keys, arrays, nested objects
    closing = closing_text(_matcher_after(_json_spec(RICH_SCHEMA), prefix))
    assert closing is not None, prefix
    jsonschema.validate(json.loads(prefix.encode() + closing), RICH_SCHEMA)


def test_closing_text_of_a_tool_call_writes_missing_required_arguments():
    prefix = '<tool_call>\n{"name": "Joke", "arguments": {"setup": "Why did the cat'
    closing = closing_text(_matcher_after(grammar_spec([JOKE_TOOL], "required", None), prefix))
    call = parse_tool_calls(prefix + closing.decode()).tool_calls[0]
    assert call["name"] == "Joke"
    jsonschema.validate(call["args"], JOKE_SCHEMA)


def test_closing_text_leaves_the_matcher_as_it_was():
    matcher = _matcher_after(_json_spec(JOKE_SCHEMA), '{"setup": "ab')
    closing_text(matcher)
    assert matcher.accept_string('c", "punchline": "d"}') and matcher.is_completed()


def _run_away(spec: GrammarSpec, budget: int, favourite: str) -> tuple[str, BudgetedGrammarProcessor]:
    """Decode with a stand-in model that always prefers ``favourite`` (then anything else, in a fixed order)
    the way a small model keeps repeating inside a string: the grammar must still close in ``budget``."""
    compiled, vocabulary = _compiled(spec)
    processor = BudgetedGrammarProcessor(compiled, vocabulary, budget, spec.optional_tail)
    preference = torch.linspace(0.0, 1.0, len(CHARS)).reshape(1, -1)
    for rank, char in enumerate(reversed(favourite)):
        preference[0, CHARS.index(char)] = 10.0 + rank
    ids = torch.zeros((1, 1), dtype=torch.long)
    for _ in range(budget):
        token = int(processor(ids, preference.clone()).argmax())
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        if token == EOS:
            break
    return "".join(CHARS[token] for token in ids[0, 1:].tolist() if token != EOS), processor


@pytest.mark.parametrize("budget", [30, 31, 36, 50, 120])
def test_string_that_never_ends_is_closed_within_the_budget(budget):
    text, processor = _run_away(_json_spec(JOKE_SCHEMA), budget, "a")
    assert len(text) <= budget
    jsonschema.validate(json.loads(text), JOKE_SCHEMA)  # 30 characters is the shortest valid Joke
    assert processor.forced_close


@pytest.mark.parametrize("budget", [60, 100])
def test_array_that_never_ends_is_closed_within_the_budget(budget):
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string"}}, "total": {"type": "integer"}},
        "required": ["items", "total"],
    }
    text, _ = _run_away(_json_spec(schema), budget, ',"a')
    assert len(text) <= budget
    document = json.loads(text)
    jsonschema.validate(document, schema)
    assert document["items"], "the model wrote items until the budget called for the close"


def test_tool_call_closes_its_json_and_may_lose_only_the_closing_tag():
    shortest = len('<tool_call>\n{"name": "Joke", "arguments": {"setup": "", "punchline": ""}}')
    for budget in (shortest, shortest + 5, shortest + 40):
        text, _ = _run_away(grammar_spec([JOKE_TOOL], "required", None), budget, "a")
        calls = parse_tool_calls(text).tool_calls
        assert len(calls) == 1 and len(text) <= budget, text
        jsonschema.validate(calls[0]["args"], JOKE_SCHEMA)


def test_budget_below_the_shortest_valid_reply_still_ends_on_time():
    text, processor = _run_away(_json_spec(JOKE_SCHEMA), 12, "a")
    assert len(text) == 12 and processor.forced_close  # cut: the chat model then says to raise max_new_tokens


def test_model_that_closes_by_itself_is_left_alone():
    text, processor = _run_away(_json_spec(JOKE_SCHEMA), 200, '"}')
    jsonschema.validate(json.loads(text), JOKE_SCHEMA)
    assert not processor.forced_close


# ------------------------------------------------------------------- on the real default model
class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="The person's first name")
    age: int = Field(description="Age in years")


class PersonDict(TypedDict):
    """A person mentioned in the text."""

    name: Annotated[str, ..., "The person's first name"]
    age: Annotated[int, ..., "Age in years"]


PERSON_SCHEMA = {
    "title": "person",
    "description": "A person mentioned in the text.",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
EXTRACT = "Alice is 31 years old. Extract the person."


@pytest.mark.integration
@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
@pytest.mark.parametrize("schema", [Person, PersonDict, PERSON_SCHEMA], ids=["pydantic", "typeddict", "json_schema"])
def test_structured_output_validates_for_every_schema_kind_and_method(chat_model, schema, method):
    structured = chat_model.bind(max_tokens=40).with_structured_output(schema, method=method, include_raw=True)
    result = structured.invoke(EXTRACT)
    # json_mode too: locally its grammar holds the object to the schema that with_structured_output was given.
    assert result["parsing_error"] is None, result["raw"]
    parsed = result["parsed"]
    if schema is Person:
        assert isinstance(parsed, Person)
    else:
        jsonschema.validate(parsed, PERSON_SCHEMA)


@pytest.mark.integration
def test_json_mode_reply_is_a_json_object(chat_model):
    reply = chat_model.invoke(
        "Reply with a JSON object with keys 'city' and 'country' for Paris.",
        response_format={"type": "json_object"},
        max_tokens=40,
    )
    assert reply.response_metadata["finish_reason"] == "stop", "the grammar ends the object and the reply"
    assert isinstance(json.loads(reply.content), dict)


@pytest.mark.integration
def test_uncompilable_schema_is_one_line_and_the_model_still_works(chat_model):
    bad = {"title": "Bad", "type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}
    with pytest.raises(SchemaError, match="cannot be used for constrained decoding"):
        chat_model.with_structured_output(bad, method="json_schema").invoke(EXTRACT)
    assert chat_model.invoke("What is the capital of France?", max_tokens=12).content


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def llm_in_dtype(request, default_llm):
    """The default model as loaded (bf16), and again in float32: the close must not rest on one dtype's picks."""
    if request.param == "bfloat16":
        return default_llm
    return HuggingFacePipeline.from_model_id(
        "default", task="text-generation", model_kwargs={"dtype": torch.float32}, pipeline_kwargs={"do_sample": False}
    )


@pytest.mark.integration
@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_joke_closes_within_64_tokens(llm_in_dtype, method):
    # Greedy SmolLM2-135M writes "The cat is a cat, a cat is a cat, ..." inside "setup" until the budget ends.
    chat = ChatHuggingFace(llm=llm_in_dtype, max_tokens=64)
    result = chat.with_structured_output(Joke, method=method, include_raw=True).invoke("Tell me a joke about cats.")
    assert result["parsing_error"] is None, result["raw"]
    assert isinstance(result["parsed"], Joke)
    raw = result["raw"]
    assert raw.usage_metadata["output_tokens"] <= 64
    finish = raw.response_metadata["finish_reason"]
    # Either the model ended the JSON itself, or the budget did, on its last token.
    assert finish in ("stop", "tool_calls") or (finish == "length" and raw.usage_metadata["output_tokens"] == 64)


@pytest.mark.integration
def test_tiny_budget_still_closes_the_object(default_llm):
    chat = ChatHuggingFace(llm=default_llm, max_tokens=12)
    reply = chat.invoke(
        "Tell me a joke about cats.",
        response_format={"type": "json_schema", "json_schema": {"name": "Joke", "schema": Joke.model_json_schema()}},
    )
    assert reply.usage_metadata["output_tokens"] <= 12
    Joke.model_validate_json(reply.content)


@pytest.mark.integration
def test_budget_below_the_shortest_call_is_a_clear_error(default_llm):
    # A forced tool call needs its "<tool_call>" wrapper and the name before the arguments: over 12 tokens.
    structured = ChatHuggingFace(llm=default_llm, max_tokens=12).with_structured_output(Joke)
    with pytest.raises(StructuredOutputCutError, match=r"cut at max_new_tokens=12 before the JSON closed"):
        structured.invoke("Tell me a joke about cats.")
