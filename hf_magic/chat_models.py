"""ChatHuggingFace: a langchain-core chat model over a local pipeline or a remote endpoint.

Messages are converted to the OpenAI chat format once, here (``chat_format``); the backend does the rest and
answers in typed ``ChatDelta``s, which ``stream_deltas`` hands on to callers that want them typed (the notebook
session) and ``_stream`` turns into message chunks. Drop-in compatible with langchain_huggingface's class.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .backend import BatchChatBackend, ChatBackend, ChatDelta, ChatRequest, GenerationParams
from .chat_format import (
    PROVIDER,
    convert_delta_to_chunk,
    convert_delta_to_message,
    convert_messages,
    normalize_tool_choice,
)
from .concurrent_chat import DEFAULT_CONCURRENCY, concurrent_replies
from .errors import HfMagicError, InvalidInputError, input_error
from .structured_output import StructuredMethod, structured_output


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
    logit_bias: dict[int, float] | None = None
    n: int | None = None
    enable_thinking: bool | None = None
    """Ask a reasoning model to think (True) or not (False); passed to chat templates and servers that take it."""
    reasoning_effort: str | None = None
    """How hard gpt-oss-style models think: "minimal", "low", "medium" or "high"."""
    streaming: bool = False
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, protected_namespaces=())

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise input_error(exc, "ChatHuggingFace") from exc

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
            ls_provider=PROVIDER,
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
            presence_penalty=_first(pick("presence_penalty"), self.presence_penalty),
            frequency_penalty=_first(pick("frequency_penalty"), self.frequency_penalty),
            logit_bias=_first(pick("logit_bias"), self.logit_bias),
        )

    def _request(self, messages: Sequence[BaseMessage], stop: list[str] | None, **kwargs: Any) -> ChatRequest:
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
        for delta in self.stream_deltas(messages, stop, **kwargs):
            chunk = ChatGenerationChunk(message=convert_delta_to_chunk(delta))
            if run_manager and delta.text:
                run_manager.on_llm_new_token(delta.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for delta in self.astream_deltas(messages, stop, **kwargs):
            chunk = ChatGenerationChunk(message=convert_delta_to_chunk(delta))
            if run_manager and delta.text:
                await run_manager.on_llm_new_token(delta.text, chunk=chunk)
            yield chunk

    def stream_deltas(
        self, messages: Sequence[BaseMessage], stop: list[str] | None = None, **kwargs: Any
    ) -> Generator[ChatDelta, None, None]:
        """The reply to ``messages`` as the backend's typed deltas: text as it comes, then usage, finish reason
        and tool calls on the last one. ``kwargs`` are per-call settings, as for ``invoke``. What ``stream``
        yields as message chunks; closing the iterator stops generation at the next token.

        Raises:
            InvalidInputError: no messages, an unsupported message type or a bad setting.
        """
        # A generator of our own: closing it closes the backend's stream (``yield from`` passes close() on).
        yield from self.llm.stream_chat(self._request(messages, stop, **kwargs))

    async def astream_deltas(
        self, messages: Sequence[BaseMessage], stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[ChatDelta]:
        """``stream_deltas`` without blocking the event loop; cancelling the task stops generation."""
        async for delta in self.llm.astream_chat(self._request(messages, stop, **kwargs)):
            yield delta

    def batch_deltas(
        self,
        conversations: Sequence[Sequence[BaseMessage]],
        stop: list[str] | None = None,
        *,
        concurrency: int | None = None,
        cancel: threading.Event | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[int, ChatDelta | HfMagicError]]:
        """Replies to many independent conversations, each whole, as ``(index, reply)`` in the order they finish.

        A local pipeline generates ``concurrency`` rows per batch (``local/batch_generation.py``); other backends
        get ``concurrency`` requests in flight at once (default 8, ``concurrent_chat.py``). A conversation that
        fails comes back as its ``HfMagicError`` and never stops the others. ``kwargs`` are per-call settings, as for
        ``invoke`` (``response_format``, ``tools``, ``max_tokens``...), the same for every conversation. ``cancel``,
        closing the iterator, or Ctrl-C in the caller stops what is still generating.

        Raises:
            InvalidInputError: an unsupported message or a bad setting (before anything is sent).
        """
        requests = [self._request(messages, stop, **kwargs) for messages in conversations]
        if isinstance(self.llm, BatchChatBackend):
            return self.llm.batch_chat(requests, batch_size=concurrency, cancel=cancel)
        return concurrent_replies(self.llm, requests, concurrency=concurrency or DEFAULT_CONCURRENCY, cancel=cancel)

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
        method: StructuredMethod = "function_calling",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Replies parsed into ``schema`` (Pydantic class -> instances; TypedDict or JSON schema -> dicts).

        ``function_calling`` forces a call of a tool built from the schema; ``json_schema`` asks the
        backend for JSON that matches the schema; ``json_mode`` for any JSON object. The local pipeline
        constrains decoding in each case, so the output always parses.
        """
        return structured_output(self, schema, method=method, include_raw=include_raw)


_CHAT_FIELDS = {name for name in ChatHuggingFace.model_fields if name not in ("llm", "tokenizer")} | {
    "max_new_tokens",
    "stop_sequences",
}


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
