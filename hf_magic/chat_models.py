"""ChatHuggingFace: a langchain-core chat model over a local pipeline or a remote endpoint.

Messages are converted to OpenAI-shaped dicts at this boundary (pure functions below, tested on
their own); the backend does the rest. Drop-in compatible with langchain_huggingface's class.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import JsonOutputKeyToolsParser, JsonOutputParser, PydanticToolsParser
from langchain_core.output_parsers.pydantic import PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableGenerator, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.json import parse_json_markdown
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .backend import ChatBackend, ChatDelta, ChatRequest, GenerationParams
from .errors import InvalidInputError, StructuredOutputCutError

_PROVIDER = "huggingface"


# ------------------------------------------------------------------------------- converters
def convert_message_to_dict(message: BaseMessage) -> dict[str, Any]:
    """One langchain message as an OpenAI-shaped chat message dict.

    Raises:
        InvalidInputError: for message types a chat model cannot take (e.g. FunctionMessage).
    """
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": message.content}
    if isinstance(message, AIMessage):
        result: dict[str, Any] = {"role": "assistant", "content": _ai_text(message)}
        reasoning = message.additional_kwargs.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            result["reasoning_content"] = reasoning  # the backend sends it back only as the model expects
        if message.tool_calls:
            result["tool_calls"] = [
                {
                    "id": call.get("id") or f"call_{index}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
                }
                for index, call in enumerate(message.tool_calls)
            ]
        return result
    if isinstance(message, ToolMessage):
        content = message.content if isinstance(message.content, str) else json.dumps(message.content)
        return {"role": "tool", "content": content, "tool_call_id": message.tool_call_id}
    if isinstance(message, ChatMessage):
        return {"role": message.role, "content": message.content}
    raise InvalidInputError(
        f"Messages of type {type(message).__name__} are not supported: use SystemMessage, HumanMessage, "
        "AIMessage or ToolMessage."
    )


def _ai_text(message: AIMessage) -> str:
    # Tool-calling replies may carry content blocks (text + tool_use); the template wants the text.
    if isinstance(message.content, str):
        return message.content
    return "".join(
        block if isinstance(block, str) else str(block.get("text", ""))
        for block in message.content
        if isinstance(block, str) or block.get("type") == "text"
    )


def convert_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidInputError("No messages to send: pass at least one message.")
    return [convert_message_to_dict(message) for message in messages]


def _response_metadata(delta: ChatDelta) -> dict[str, Any]:
    metadata: dict[str, Any] = {"model_provider": _PROVIDER}
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
        usage_metadata=delta.usage.as_usage_metadata() if delta.usage else None,  # type: ignore[arg-type]
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
        tool_call_chunks=tool_call_chunks,
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


# ------------------------------------------------------------------------------ chat model
class ChatHuggingFace(BaseChatModel):
    """Chat with a Hugging Face model, locally (``HuggingFacePipeline``) or remotely (``HuggingFaceEndpoint``).

    Example:
        >>> from hf_magic import ChatHuggingFace, HuggingFacePipeline
        >>> llm = HuggingFacePipeline.from_model_id("default", task="text-generation",
        ...     pipeline_kwargs=dict(max_new_tokens=64, do_sample=False))
        >>> ChatHuggingFace(llm=llm).invoke("What is the capital of France?").content
        'The capital of France is Paris.'
    """

    llm: Any
    """The backend: a ``HuggingFacePipeline`` or a ``HuggingFaceEndpoint``."""
    tokenizer: Any = None
    """Accepted for compatibility; the backend's own tokenizer is always used."""
    model_id: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, alias="max_new_tokens")
    stop: str | list[str] | None = Field(default=None, alias="stop_sequences")
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[int, int] | None = None
    n: int | None = None
    enable_thinking: bool | None = None
    """Ask a reasoning model to think (True) or not (False); passed to chat templates and servers that take it."""
    reasoning_effort: str | None = None
    """How hard gpt-oss-style models think: "low", "medium" or "high"."""
    streaming: bool = False
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, protected_namespaces=())

    @model_validator(mode="after")
    def _check_backend(self) -> ChatHuggingFace:
        if not isinstance(self.llm, ChatBackend):
            raise InvalidInputError(
                f"ChatHuggingFace needs llm=HuggingFacePipeline(...) or HuggingFaceEndpoint(...), "
                f"got {type(self.llm).__name__}."
            )
        if self.n not in (None, 1):
            raise InvalidInputError("n > 1 is not supported: call the model several times instead.")
        if self.model_id is None:
            self.model_id = self.llm.model_name
        self._params()  # validate max_tokens / temperature now, not at the first call
        _reasoning_effort(self.reasoning_effort)
        return self

    @classmethod
    def from_model_id(
        cls,
        model_id: str | None = None,
        task: str | None = None,
        backend: Literal["pipeline", "endpoint"] = "pipeline",
        **kwargs: Any,
    ) -> ChatHuggingFace:
        """Build the backend and the chat model in one call.

        Chat-model fields (``temperature``, ``max_tokens``...) are taken from ``kwargs``; the rest go
        to ``HuggingFacePipeline.from_model_id`` or ``HuggingFaceEndpoint``.
        """
        chat_fields = {key: kwargs.pop(key) for key in list(kwargs) if key in _CHAT_FIELDS}
        if backend == "pipeline":
            from .local.pipeline import HuggingFacePipeline

            llm: Any = HuggingFacePipeline.from_model_id(model_id, task=task or "text-generation", **kwargs)
        elif backend == "endpoint":
            from .remote.endpoint import HuggingFaceEndpoint

            llm = HuggingFaceEndpoint(repo_id=model_id, task=task or "conversational", **kwargs)
        else:
            raise InvalidInputError(f"Unknown backend {backend!r}: use 'pipeline' or 'endpoint'.")
        return cls(llm=llm, **chat_fields)

    @property
    def _llm_type(self) -> str:
        return "huggingface-chat-wrapper"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "backend": type(self.llm).__name__}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = self._params(stop, **kwargs)
        ls_params = LangSmithParams(
            ls_provider=_PROVIDER,
            ls_model_name=kwargs.get("model") or self.model_id or self.llm.model_name,  # a per-call override wins
            ls_model_type="chat",
        )
        if params.temperature is not None:
            ls_params["ls_temperature"] = params.temperature
        if params.max_new_tokens is not None:
            ls_params["ls_max_tokens"] = params.max_new_tokens
        if params.stop:
            ls_params["ls_stop"] = list(params.stop)
        return ls_params

    # --------------------------------------------------------------------------- requests
    def _params(self, stop: list[str] | None = None, **kwargs: Any) -> GenerationParams:
        """The chat model's settings, overridden by per-call ones."""

        def pick(*names: str) -> Any:
            for name in names:
                if kwargs.get(name) is not None:
                    return kwargs[name]
            return None

        stops = stop if stop is not None else pick("stop", "stop_sequences")
        if stops is None:
            stops = self.stop
        if isinstance(stops, str):
            stops = [stops]
        max_new = pick("max_tokens", "max_new_tokens")
        logprobs = pick("logprobs")
        return GenerationParams(
            max_new_tokens=max_new if max_new is not None else self.max_tokens,
            temperature=_first(pick("temperature"), self.temperature),
            top_p=_first(pick("top_p"), self.top_p),
            top_k=_first(pick("top_k"), self.top_k),
            repetition_penalty=_first(pick("repetition_penalty"), self.repetition_penalty),
            do_sample=pick("do_sample"),
            seed=_first(pick("seed"), self.seed),
            stop=tuple(stops or ()),
            logprobs=bool(logprobs if logprobs is not None else self.logprobs),
            top_logprobs=_first(pick("top_logprobs"), self.top_logprobs),
        )

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> ChatRequest:
        tools = kwargs.get("tools") or None
        return ChatRequest(
            messages=convert_messages(messages),
            params=self._params(stop, **kwargs),
            tools=tools,
            tool_choice=normalize_tool_choice(kwargs.get("tool_choice"), tools or []) if tools else None,
            response_format=kwargs.get("response_format"),
            thinking=_first(kwargs.get("enable_thinking"), self.enable_thinking),
            reasoning_effort=_reasoning_effort(_first(kwargs.get("reasoning_effort"), self.reasoning_effort)),
        )

    # ------------------------------------------------------------------------- generation
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # BaseChatModel already routes to _stream when streaming=True or a token handler listens.
        return _result(self.llm.chat(self._request(messages, stop, **kwargs)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _result(await self.llm.achat(self._request(messages, stop, **kwargs)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._stream_request(self._request(messages, stop, **kwargs), run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self._astream_request(self._request(messages, stop, **kwargs), run_manager):
            yield chunk

    def _stream_request(
        self, request: ChatRequest, run_manager: CallbackManagerForLLMRun | None
    ) -> Iterator[ChatGenerationChunk]:
        for delta in self.llm.stream_chat(request):
            chunk = ChatGenerationChunk(message=convert_delta_to_chunk(delta))
            if run_manager and delta.text:
                run_manager.on_llm_new_token(delta.text, chunk=chunk)
            yield chunk

    async def _astream_request(
        self, request: ChatRequest, run_manager: AsyncCallbackManagerForLLMRun | None
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for delta in self.llm.astream_chat(request):
            chunk = ChatGenerationChunk(message=convert_delta_to_chunk(delta))
            if run_manager and delta.text:
                await run_manager.on_llm_new_token(delta.text, chunk=chunk)
            yield chunk

    # -------------------------------------------------------------- tools and structured output
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (OpenAI-shaped after conversion) and an optional ``tool_choice``:
        ``"auto"``, ``"none"``, ``"any"``/``"required"``, a tool name, or True for the only tool."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        normalize_tool_choice(tool_choice, formatted)  # reject a bad choice now, not at call time
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Replies parsed into ``schema`` (Pydantic class -> instances; TypedDict or JSON schema -> dicts).

        ``function_calling`` forces a call of a tool built from the schema; ``json_schema`` asks the
        backend for JSON that matches the schema; ``json_mode`` for any JSON object. The local pipeline
        constrains decoding in each case, so the output always parses.
        """
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, ls_structured_output_format={"kwargs": {"method": method}, "schema": tool}
            )
            parser: Runnable = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            if method == "json_schema":
                json_schema = convert_to_json_schema(schema)
                response_format: dict[str, Any] = {
                    "type": "json_schema",
                    "json_schema": {"name": json_schema.get("title", "output"), "schema": json_schema, "strict": True},
                }
            else:
                response_format = {"type": "json_object"}
            llm = self.bind(
                response_format=response_format,
                ls_structured_output_format={
                    "kwargs": {"method": method},
                    "schema": schema if not is_pydantic else convert_to_json_schema(schema),
                },
            )
            parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
        else:
            raise InvalidInputError(f"Unknown method {method!r}: use 'function_calling', 'json_schema' or 'json_mode'.")
        parser = _cut_reply_check(method) | parser
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")


_CHAT_FIELDS = {name for name in ChatHuggingFace.model_fields if name not in ("llm", "tokenizer")} | {
    "max_new_tokens",
    "stop_sequences",
}


def _cut_reply_check(method: str) -> Runnable:
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


_REASONING_EFFORTS = ("minimal", "low", "medium", "high")


def _reasoning_effort(value: Any) -> str | None:
    if value is None or value in _REASONING_EFFORTS:
        return value
    raise InvalidInputError(f"reasoning_effort must be one of {', '.join(_REASONING_EFFORTS)}, got {value!r}.")


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _result(delta: ChatDelta) -> ChatResult:
    message = convert_delta_to_message(delta)
    return ChatResult(generations=[ChatGeneration(message=message, generation_info=dict(message.response_metadata))])
