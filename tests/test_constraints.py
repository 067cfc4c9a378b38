"""Which grammar a request needs and what those grammars accept (xgrammar, no model needed); at the end,
structured output on the real default model."""

from __future__ import annotations

import json
from typing import Annotated

import jsonschema
import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict
from xgrammar.testing import _is_grammar_accept_string as accepts

from hf_magic.constraints import (
    GrammarSpec,
    build_grammar,
    forced_tool_names,
    grammar_spec,
    response_format_schema,
    tool_call_schema,
)
from hf_magic.errors import InvalidInputError, SchemaError
from hf_magic.tool_calls import parse_tool_calls


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
    if method == "json_mode":
        # json_mode promises a JSON object, not the schema's keys: greedy SmolLM2-135M answers '{"Alice": 31}'.
        assert isinstance(json.loads(result["raw"].content), dict)
        return
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
