"""Structured output for ChatHuggingFace: a schema as a forced tool call or a response format, and the parser that
reads the reply back (with a clear error when the token limit cut the JSON)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import JsonOutputKeyToolsParser, JsonOutputParser, PydanticToolsParser
from langchain_core.output_parsers.pydantic import PydanticOutputParser
from langchain_core.runnables import Runnable, RunnableGenerator, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.json import parse_json_markdown
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel

from .errors import InvalidInputError, StructuredOutputCutError

StructuredMethod = Literal["function_calling", "json_schema", "json_mode"]


def structured_output(
    model: BaseChatModel, schema: dict[str, Any] | type, method: StructuredMethod, include_raw: bool
) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
    """``model.with_structured_output(schema, method=..., include_raw=...)``: see that method."""
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    if method == "function_calling":
        tool = convert_to_openai_tool(schema)
        name = tool["function"]["name"]
        llm = model.bind_tools(
            [schema], tool_choice=name, ls_structured_output_format={"kwargs": {"method": method}, "schema": tool}
        )
        parser: Runnable = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            if is_pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    elif method in ("json_schema", "json_mode"):
        if method == "json_schema":
            response_format: dict[str, Any] = json_schema_format(schema)
        else:
            # A JSON object; the schema rides along so the local grammar can hold the reply to it (endpoints send
            # OpenAI's plain json_object, and the prompt must ask for the fields, as with any json_mode).
            response_format = {"type": "json_object"}
            if schema is not None:
                response_format["schema"] = convert_to_json_schema(schema)
        llm = model.bind(
            response_format=response_format,
            ls_structured_output_format={
                "kwargs": {"method": method},
                "schema": schema if not is_pydantic else convert_to_json_schema(schema),
            },
        )
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
    else:
        raise InvalidInputError(f"Unknown method {method!r}: use 'function_calling', 'json_schema' or 'json_mode'.")
    parser = cut_reply_check(method) | parser
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")


def json_schema_format(schema: dict[str, Any] | type) -> dict[str, Any]:
    """OpenAI's ``response_format`` asking for JSON that matches ``schema`` (Pydantic class, TypedDict or JSON
    schema): what servers enforce, and what the local pipeline compiles into a grammar."""
    json_schema = convert_to_json_schema(schema)
    return {
        "type": "json_schema",
        "json_schema": {"name": json_schema.get("title", "output"), "schema": json_schema, "strict": True},
    }


def cut_reply_check(method: str) -> Runnable:
    """Passes the reply on unchanged (streamed chunk by chunk), then raises ``StructuredOutputCutError`` when
    the token limit cut it before the structured part was whole: the parsers would return ``None`` (tool
    calls) or a partial object without a word about why."""

    def check(messages: Iterator[BaseMessage]) -> Iterator[BaseMessage]:
        whole: Any = None
        for message in messages:
            whole = message if whole is None else whole + message
            yield message
        if whole is not None:
            _raise_if_cut(whole, method)

    async def acheck(messages: AsyncIterator[BaseMessage]) -> AsyncIterator[BaseMessage]:
        whole: Any = None
        async for message in messages:
            whole = message if whole is None else whole + message
            yield message
        if whole is not None:
            _raise_if_cut(whole, method)

    return RunnableGenerator(check, acheck, name="check_structured_reply_whole")


def _raise_if_cut(message: BaseMessage, method: str) -> None:
    if message.response_metadata.get("finish_reason") != "length":
        return
    if _structured_part_is_whole(message, method):
        return
    usage = getattr(message, "usage_metadata", None) or {}
    limit = f"max_new_tokens={usage['output_tokens']}" if usage.get("output_tokens") else "max_new_tokens"
    raise StructuredOutputCutError(
        f"The structured reply was cut at {limit} before the JSON closed: raise max_new_tokens.",
        llm_output=message.text,
    )


def _structured_part_is_whole(message: BaseMessage, method: str) -> bool:
    if method != "function_calling":
        return _is_json(message.text, markdown=True)
    chunks = getattr(message, "tool_call_chunks", None)
    if chunks:  # streamed: langchain reads a cut call's arguments as partial JSON into tool_calls
        return all(_is_json(chunk.get("args") or "{}") for chunk in chunks)
    return bool(getattr(message, "tool_calls", None))


def _is_json(text: str, markdown: bool = False) -> bool:
    try:
        parse_json_markdown(text, parser=json.loads) if markdown else json.loads(text)
    except json.JSONDecodeError:
        return False
    return True
