"""HuggingFaceEndpoint: a remote model (Inference Providers, an Inference Endpoint, or any OpenAI-compatible
server such as TGI, vLLM or ``transformers serve``) as a langchain LLM and as a chat backend."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx2
from huggingface_hub import AsyncInferenceClient, InferenceClient, get_token
from huggingface_hub.errors import TextGenerationError
from huggingface_hub.utils import hf_raise_for_status
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.messages import convert_to_openai_data_block, is_data_content_block
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import GenerationChunk
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, model_validator

from .. import config
from ..backend import ChatDelta, ChatRequest, GenerationParams, Usage
from ..errors import EndpointError, InvalidInputError, StreamInterruptedError
from ..reasoning import ThinkTagParser, split_reasoning
from ..text_completion import astream_chunks, stream_chunks
from .endpoint_errors import EndpointTarget, endpoint_error, retry_delay

logger = logging.getLogger(__name__)

SUPPORTED_TASKS = ("text-generation", "conversational", "text2text-generation", "summarization")

# Hosts run by Hugging Face: the only ones a Hugging Face token is ever sent to.
_HF_DOMAINS = ("huggingface.co", "hf.co", "huggingface.cloud", "hf.space")

# A transport failure while a reply streams in: the reply is cut, what arrived is kept.
_STREAM_CUT_ERRORS = (httpx2.TransportError, httpx2.StreamError, TextGenerationError, json.JSONDecodeError)

_T = TypeVar("_T")


def is_huggingface_url(url: str) -> bool:
    """True for Hugging Face's own hosts (the hub, the router, Inference Endpoints) and ``HF_ENDPOINT``."""
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    if any(host == domain or host.endswith("." + domain) for domain in _HF_DOMAINS):
        return parsed.scheme == "https"
    hub = urlparse(config.hub_endpoint())
    return (parsed.scheme, host, parsed.port) == (hub.scheme, (hub.hostname or "").lower(), hub.port)


def models_url(endpoint_url: str) -> str:
    """The OpenAI ``/v1/models`` route of a server given by its base or chat-completions URL."""
    base = endpoint_url.rstrip("/")
    base = base.removesuffix("/chat/completions")
    return f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"


# ----------------------------------------------------------------------------- converters
def to_openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as OpenAI expects them: langchain's standard data blocks (images as ``url`` /
    ``base64`` / ``source_type`` blocks) become ``image_url`` parts; everything else passes through."""
    return [_openai_message(message) for message in messages]


def _openai_message(message: dict[str, Any]) -> dict[str, Any]:
    if "reasoning_content" in message:
        # Servers re-render past turns with their own template; some refuse thinking sent back (DeepSeek's API).
        message = {key: value for key, value in message.items() if key != "reasoning_content"}
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append({"type": "text", "text": block})
        elif isinstance(block, dict) and is_data_content_block(block):
            parts.append(convert_to_openai_data_block(block))
        else:
            parts.append(block)
    return {**message, "content": parts}


def completion_args(params: GenerationParams) -> dict[str, Any]:
    """``chat_completion`` keyword arguments for ``params``; unset values are left to the server.

    ``top_k`` and ``repetition_penalty`` are not part of the OpenAI API: they go in ``extra_body``
    only when set, so servers that reject unknown fields are not sent them by default.
    """
    args: dict[str, Any] = {"max_tokens": params.max_new_tokens or config.DEFAULT_MAX_NEW_TOKENS}
    extra: dict[str, Any] = {}
    if params.greedy and (params.temperature is not None or params.do_sample is not None):
        args["temperature"] = 0.0
    elif not params.greedy:
        if params.temperature is not None:
            args["temperature"] = params.temperature
        if params.top_p is not None:
            args["top_p"] = params.top_p
        if params.top_k is not None:
            extra["top_k"] = params.top_k
    if params.repetition_penalty is not None:
        extra["repetition_penalty"] = params.repetition_penalty
    if params.stop:
        args["stop"] = list(params.stop)
    if params.seed is not None:
        args["seed"] = params.seed
    if params.logprobs:
        args["logprobs"] = True
        if params.top_logprobs is not None:
            args["top_logprobs"] = params.top_logprobs
    if extra:
        args["extra_body"] = extra
    return args


def parse_output_tool_calls(raw_calls: list[Any] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A reply's tool calls as (valid, invalid): arguments that are not a JSON object are invalid, not an error."""
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    for index, call in enumerate(raw_calls or []):
        raw = _raw_tool_call(call, index)
        try:
            parsed = parse_tool_call(raw, return_id=True)
        except Exception as exc:  # langchain raises OutputParserException on bad JSON
            invalid.append(make_invalid_tool_call(raw, str(exc)))
            continue
        if parsed is None or not isinstance(parsed.get("args"), dict):
            invalid.append(make_invalid_tool_call(raw, "Tool call arguments are not a JSON object."))
        else:
            valid.append(parsed)
    return valid, invalid


def _raw_tool_call(call: Any, index: int) -> dict[str, Any]:
    # TGI sends arguments as an object, OpenAI-compatible servers as a JSON string.
    function = _get(call, "function") or {}
    arguments = _get(function, "arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {})
    return {
        "id": _get(call, "id") or f"call_{index}",
        "type": "function",
        "function": {"name": _get(function, "name") or "", "arguments": arguments},
    }


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _logprobs(choice: Any) -> list[dict[str, Any]] | None:
    content = _get(_get(choice, "logprobs"), "content")
    if not content:
        return None
    return [
        {
            "token": _get(item, "token"),
            "logprob": _get(item, "logprob"),
            "top_logprobs": [
                {"token": _get(top, "token"), "logprob": _get(top, "logprob")}
                for top in _get(item, "top_logprobs") or []
            ],
        }
        for item in content
    ]


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    reasoning = _get(_extra(raw, "completion_tokens_details"), "reasoning_tokens")
    return Usage(
        input_tokens=int(_get(raw, "prompt_tokens") or 0),
        output_tokens=int(_get(raw, "completion_tokens") or 0),
        reasoning_tokens=int(reasoning) if reasoning is not None else None,
    )


def _server_reasoning(message: Any) -> str:
    """Thinking a server split off itself: ``reasoning_content`` (vLLM, SGLang, DeepSeek, ``transformers
    serve``) or ``reasoning`` (OpenRouter, newer vLLM)."""
    return str(_extra(message, "reasoning_content") or _extra(message, "reasoning") or "")


def _extra(obj: Any, key: str) -> Any:
    # huggingface_hub's output types keep fields they do not declare as attributes only, not as dict items.
    value = getattr(obj, key, None)
    return value if value is not None else _get(obj, key)


def delta_from_output(output: Any) -> ChatDelta:
    """A whole ``chat_completion`` reply as one ChatDelta."""
    choices = _extra(output, "choices") or []
    if not choices:
        raise EndpointError("The server answered without a reply (no choices): check the server's logs.")
    choice = choices[0]
    message = _extra(choice, "message")
    tool_calls, invalid = parse_output_tool_calls(_get(message, "tool_calls"))
    # A server that does not split the thinking off writes it inline, in <think> tags.
    inline, answer = split_reasoning(_get(message, "content") or "")
    return ChatDelta(
        text=answer,
        reasoning=_server_reasoning(message) + inline,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        finish_reason=_get(choice, "finish_reason") or "stop",
        usage=_usage(_extra(output, "usage")),
        logprobs=_logprobs(choice),
        model_name=_get(output, "model") or None,
    )


class StreamAssembler:
    """Turns ``chat_completion`` stream chunks into ChatDeltas and notices a stream that was cut.

    Text and tool-call chunks are passed on as they come; finish reason and usage may arrive in
    different chunks (OpenAI sends usage after the finish reason), so both go on one last delta.
    Thinking comes as ``reasoning_content`` / ``reasoning`` deltas, or inline in ``<think>`` tags.
    """

    def __init__(self) -> None:
        self._think = ThinkTagParser()
        self.text_parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model_name: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def push(self, chunk: Any) -> ChatDelta | None:
        self.model_name = _get(chunk, "model") or self.model_name
        self.usage = _usage(_extra(chunk, "usage")) or self.usage
        choices = _extra(chunk, "choices") or []
        if not choices:
            return None
        choice = choices[0]
        self.finish_reason = _get(choice, "finish_reason") or self.finish_reason
        delta = _extra(choice, "delta")
        text = _get(delta, "content") or ""
        chunks = [
            {
                "name": _get(_get(call, "function"), "name") or None,
                "args": _get(_get(call, "function"), "arguments") or None,
                "id": _get(call, "id") or None,
                "index": _get(call, "index"),
            }
            for call in _get(delta, "tool_calls") or []
        ]
        logprobs = _logprobs(choice)
        self.text_parts.append(text)
        parts = self._think.push(text)
        reasoning = _server_reasoning(delta) + parts.reasoning
        if not parts.text and not reasoning and not chunks and not logprobs:
            return None
        return ChatDelta(text=parts.text, reasoning=reasoning, tool_call_chunks=chunks, logprobs=logprobs)

    def finish(self, url: str) -> ChatDelta:
        """The last delta; a stream that ended without a finish reason was cut."""
        if self.finish_reason is None:
            raise StreamInterruptedError(
                f"The reply from {url} stopped mid-stream (no finish reason): the partial text is kept on the "
                "error as partial_text; retry, and check the server's logs.",
                partial_text=self.text,
            )
        held = self._think.finish()
        return ChatDelta(
            text=held.text,
            reasoning=held.reasoning,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model_name=self.model_name,
        )


# --------------------------------------------------------------------------- HTTP clients
class _DirectInferenceClient(InferenceClient):
    """An InferenceClient for a server that is not Hugging Face's.

    Requests never carry a Hugging Face token (huggingface_hub would add the one from the
    environment), ignore ``HF_HUB_OFFLINE`` (the hub is not involved), and keep an OpenAI-shaped
    ``response_format`` (huggingface_hub rewrites it into TGI's shape for URLs).
    """

    def __init__(self, *args: Any, http: httpx2.Client, authorization: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = http
        self._authorization = authorization
        self.openai_response_format: dict[str, Any] | None = None

    def _inner_post(self, request_parameters: Any, *, stream: bool = False) -> Any:
        _prepare_direct_request(request_parameters, self._authorization, self.openai_response_format)
        response_cm = self._http.stream(
            "POST",
            request_parameters.url,
            json=request_parameters.json,
            content=request_parameters.data,
            headers=request_parameters.headers,
            timeout=self.timeout,
        )
        if stream:
            response = self.exit_stack.enter_context(response_cm)  # closed by close()
            if response.status_code >= 400:
                response.read()  # so the error can quote the server's explanation
            hf_raise_for_status(response)
            return response.iter_lines()
        with response_cm as response:
            response.read()
            hf_raise_for_status(response)
            return response.content


class _DirectAsyncInferenceClient(AsyncInferenceClient):
    """``_DirectInferenceClient`` for asyncio: its own HTTP client, closed with ``close()``."""

    def __init__(self, *args: Any, authorization: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._authorization = authorization
        self.openai_response_format: dict[str, Any] | None = None

    async def _get_async_client(self) -> httpx2.AsyncClient:
        if self._async_client is None:
            client = httpx2.AsyncClient(follow_redirects=True, timeout=None, event_hooks={"response": [_read_error]})
            self._async_client = await self.exit_stack.enter_async_context(client)
        return self._async_client

    async def _inner_post(self, request_parameters: Any, *, stream: bool = False) -> Any:
        _prepare_direct_request(request_parameters, self._authorization, self.openai_response_format)
        return await super()._inner_post(request_parameters, stream=stream)


async def _read_error(response: httpx2.Response) -> None:
    if response.status_code >= 400:
        await response.aread()


def _prepare_direct_request(
    request_parameters: Any, authorization: str | None, response_format: dict[str, Any] | None
) -> None:
    headers = {key: value for key, value in request_parameters.headers.items() if key.lower() != "authorization"}
    if authorization:  # the user's own credential for their server, from server_kwargs["headers"]
        headers["authorization"] = authorization
    request_parameters.headers = headers
    if response_format is not None and isinstance(request_parameters.json, dict):
        request_parameters.json["response_format"] = response_format


# ------------------------------------------------------------------------------ the model
class HuggingFaceEndpoint(LLM):
    """A model behind an inference server, compatible with langchain_huggingface's class.

    Use ``repo_id`` for Hugging Face Inference Providers, or ``endpoint_url`` for a dedicated Inference
    Endpoint or any OpenAI-compatible server (TGI, vLLM, ``transformers serve``...). With both,
    ``repo_id`` names the model in requests to ``endpoint_url``; with ``endpoint_url`` alone the
    server's only model is found at ``/v1/models``. The token (``huggingfacehub_api_token``, else
    ``HUGGINGFACEHUB_API_TOKEN`` / ``HF_TOKEN``) is only ever sent to Hugging Face's own hosts.

    Example:
        >>> llm = HuggingFaceEndpoint(endpoint_url="http://127.0.0.1:8000", max_new_tokens=64)
        >>> ChatHuggingFace(llm=llm).invoke("What is the capital of France?").content
        'The capital of France is Paris.'
    """

    endpoint_url: str | None = None
    """A server's URL (``http://host:port``, ``.../v1`` or ``.../v1/chat/completions``)."""
    repo_id: str | None = None
    """A hub model id: served by Inference Providers, or the model to ask ``endpoint_url`` for."""
    model: str = ""
    """Where requests go: ``endpoint_url`` if given, else ``repo_id`` (set from them)."""
    provider: str | None = None
    """An Inference Provider for ``repo_id`` (e.g. ``"together"``); default: huggingface_hub's ``"auto"``."""
    task: str | None = None
    huggingfacehub_api_token: SecretStr | None = None
    max_new_tokens: int = config.DEFAULT_MAX_NEW_TOKENS
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop_sequences: list[str] = Field(default_factory=list)
    seed: int | None = None
    timeout: float = 120
    """Seconds to wait for the server (per request)."""
    max_retries: int = 3
    """Retries of a request refused with 429 / 503 (rate limit, model loading), honouring ``Retry-After``."""
    streaming: bool = False
    server_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra ``InferenceClient`` arguments: ``headers``, ``cookies``, ``bill_to``."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra request fields sent to the server as they are (``extra_body``)."""

    model_config = ConfigDict(protected_namespaces=())

    _http: httpx2.Client | None = PrivateAttr(default=None)
    _served_model: str | None = PrivateAttr(default=None)
    _served_model_known: bool = PrivateAttr(default=False)

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise _input_error(exc) from exc

    @model_validator(mode="before")
    @classmethod
    def _collect_extra(cls, values: Any) -> Any:
        """Unknown keyword arguments become ``model_kwargs``, as in langchain_huggingface."""
        if not isinstance(values, dict):
            return values
        known = set(cls.model_fields) | {field.alias for field in cls.model_fields.values() if field.alias}
        extra = dict(values.get("model_kwargs") or {})
        for key in [key for key in values if key not in known]:
            if key in extra:
                raise InvalidInputError(f"{key} was given twice (as an argument and in model_kwargs): pass it once.")
            extra[key] = values.pop(key)
        return {**values, "model_kwargs": extra}

    @model_validator(mode="after")
    def _check(self) -> HuggingFaceEndpoint:
        if self.model and not (self.endpoint_url or self.repo_id):
            if self.model.startswith(("http://", "https://")):
                self.endpoint_url = self.model
            else:
                self.repo_id = self.model
        if self.endpoint_url:
            if not self.endpoint_url.startswith(("http://", "https://")):
                raise InvalidInputError(
                    f"endpoint_url must start with http:// or https://, got {self.endpoint_url!r}: "
                    "e.g. endpoint_url='http://127.0.0.1:8000'."
                )
            self.model = self.endpoint_url
        elif self.repo_id:
            self.model = self.repo_id
        else:
            raise InvalidInputError(
                "HuggingFaceEndpoint needs repo_id='org/model' (Inference Providers) or endpoint_url='http://...'."
            )
        if self.task is not None and self.task not in SUPPORTED_TASKS:
            raise InvalidInputError(f"Task {self.task!r} is not supported: use task='text-generation'.")
        unknown = set(self.server_kwargs) - {"headers", "cookies", "bill_to"}
        if unknown:
            raise InvalidInputError(
                f"server_kwargs {sorted(unknown)} are not InferenceClient arguments: use headers, cookies or bill_to."
            )
        if self.max_retries < 0:
            raise InvalidInputError(f"max_retries must be >= 0, got {self.max_retries}.")
        self.default_params()  # validate sampling settings now, not at the first call
        return self

    # ----------------------------------------------------------------------------- properties
    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"huggingfacehub_api_token": "HUGGINGFACEHUB_API_TOKEN"}

    @property
    def _llm_type(self) -> str:
        return "huggingface_endpoint"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "repo_id": self.repo_id,
            "task": self.task,
            "provider": self.provider,
            "model_kwargs": self.model_kwargs,
        }

    @property
    def model_name(self) -> str:
        return self.repo_id or self.endpoint_url or self.model

    @property
    def on_hub(self) -> bool:
        """True when requests go to Hugging Face (Inference Providers or an Inference Endpoint)."""
        return self.endpoint_url is None or is_huggingface_url(self.endpoint_url)

    def default_params(self) -> GenerationParams:
        """Generation settings given at construction."""
        return GenerationParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            do_sample=self.do_sample,
            stop=tuple(self.stop_sequences),
            seed=self.seed,
        )

    # --------------------------------------------------------------------------- clients
    def _token(self) -> str | None:
        """The token for Hugging Face hosts; never called for other hosts."""
        if self.huggingfacehub_api_token is not None:
            return self.huggingfacehub_api_token.get_secret_value() or None
        return config.env_token() or get_token()  # then the `hf auth login` token, as huggingface_hub would

    def _secrets(self) -> list[str]:
        token = self._token()
        return [token] if token else []

    def _target(self) -> EndpointTarget:
        return EndpointTarget(
            url=self.endpoint_url or f"Inference Providers ({self.provider or 'auto'})",
            model=self.repo_id,
            token_sent=self.on_hub and self._token() is not None,
            on_hub=self.on_hub,
            timeout=self.timeout,
        )

    def _user_authorization(self) -> str | None:
        headers = self.server_kwargs.get("headers") or {}
        return next((value for key, value in headers.items() if key.lower() == "authorization"), None)

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "timeout": self.timeout, **self.server_kwargs}
        if self.on_hub:
            kwargs.update(token=self._token(), provider=self.provider)
        return kwargs

    def _sync_client(self, request: ChatRequest) -> InferenceClient:
        if self.on_hub:
            return InferenceClient(**self._client_kwargs())
        if self._http is None:
            self._http = httpx2.Client(follow_redirects=True, timeout=None)
        client = _DirectInferenceClient(
            http=self._http, authorization=self._user_authorization(), **self._client_kwargs()
        )
        client.openai_response_format = request.response_format
        return client

    def _async_client(self, request: ChatRequest) -> AsyncInferenceClient:
        if self.on_hub:
            return AsyncInferenceClient(**self._client_kwargs())
        client = _DirectAsyncInferenceClient(authorization=self._user_authorization(), **self._client_kwargs())
        client.openai_response_format = request.response_format
        return client

    def served_model(self) -> str | None:
        """The model name to put in requests: ``repo_id``, or the only model a foreign server lists.

        Servers such as ``transformers serve`` and vLLM refuse requests that name another model.
        Asked once per instance; None when the server does not say (TGI accepts any name).
        """
        if self.repo_id or self.on_hub:
            return self.repo_id
        if not self._served_model_known:
            self._served_model = self._discover_served_model()
            self._served_model_known = True
        return self._served_model

    def _discover_served_model(self) -> str | None:
        assert self.endpoint_url is not None
        headers = {"authorization": auth} if (auth := self._user_authorization()) else {}
        try:
            response = httpx2.get(models_url(self.endpoint_url), headers=headers, timeout=self.timeout)
        except httpx2.HTTPError as exc:
            raise endpoint_error(exc, self._target()) from exc
        if response.status_code != 200:
            return None
        try:
            models = response.json().get("data") or []
        except (ValueError, AttributeError):
            return None
        return models[0].get("id") if len(models) == 1 and isinstance(models[0], dict) else None

    def _request_args(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        params = self.default_params().merged(request.params)
        args = completion_args(params)
        if self.model_kwargs:
            args["extra_body"] = {**self.model_kwargs, **args.get("extra_body", {})}
        if request.tools:
            args["tools"] = request.tools
            if request.tool_choice is not None:
                args["tool_choice"] = request.tool_choice
        if request.response_format is not None:
            args["response_format"] = request.response_format
        thinking = _thinking_fields(request)
        if thinking:
            args["extra_body"] = {**args.get("extra_body", {}), **thinking}
        if stream:
            args["stream"] = True
            args["stream_options"] = {"include_usage": True}
        args["messages"] = to_openai_messages(request.messages)
        return args

    # ----------------------------------------------------------------- retries and errors
    def _with_retries(self, send: Callable[[], _T]) -> _T:
        attempt = 0
        while True:
            try:
                return send()
            except EndpointError:
                raise
            except Exception as exc:
                time.sleep(self._retry_delay_or_raise(exc, attempt))
                attempt += 1

    def _retry_delay_or_raise(self, exc: Exception, attempt: int) -> float:
        """Seconds to wait before retrying after ``exc`` (429 / 503), or the one-line EndpointError for it."""
        delay = retry_delay(exc, attempt) if attempt < self.max_retries else None
        if delay is None:
            raise self._error(exc) from exc
        logger.info("%s answered %s; retrying in %.1f s", self._target().url, type(exc).__name__, delay)
        return delay

    async def _awith_retries(self, send: Callable[[], Awaitable[_T]]) -> _T:
        attempt = 0
        while True:
            try:
                return await send()
            except EndpointError:
                raise
            except Exception as exc:
                await asyncio.sleep(self._retry_delay_or_raise(exc, attempt))
                attempt += 1

    def _error(self, exc: BaseException) -> EndpointError:
        return endpoint_error(exc, self._target(), self._secrets())

    def _interrupted(self, exc: BaseException, assembler: StreamAssembler) -> StreamInterruptedError:
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        for secret in self._secrets():
            cause = cause.replace(secret, "***")
        return StreamInterruptedError(
            f"The reply from {self._target().url} was cut mid-stream ({cause}); the partial text is kept as "
            "partial_text: retry, and check the server's logs.",
            partial_text=assembler.text,
        )

    # ------------------------------------------------------------------------ chat backend
    def chat(self, request: ChatRequest) -> ChatDelta:
        args = self._request_args(request, stream=False)
        client = self._sync_client(request)
        try:
            output = self._with_retries(lambda: client.chat_completion(model=self.served_model(), **args))
        finally:
            client.close()
        return delta_from_output(output)

    async def achat(self, request: ChatRequest) -> ChatDelta:
        args = self._request_args(request, stream=False)
        served = await asyncio.to_thread(self.served_model)
        client = self._async_client(request)
        try:
            output = await self._awith_retries(lambda: client.chat_completion(model=served, **args))
        finally:
            await client.close()
        return delta_from_output(output)

    def stream_chat(self, request: ChatRequest) -> Iterator[ChatDelta]:
        args = self._request_args(request, stream=True)
        client = self._sync_client(request)
        assembler = StreamAssembler()
        try:
            chunks = self._with_retries(lambda: client.chat_completion(model=self.served_model(), **args))
            try:
                for chunk in chunks:
                    delta = assembler.push(chunk)
                    if delta is not None:
                        yield delta
            except _STREAM_CUT_ERRORS as exc:
                raise self._interrupted(exc, assembler) from exc
            yield assembler.finish(self._target().url)
        finally:
            client.close()  # closes the response: a stream left early stops the server's generation

    async def astream_chat(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        args = self._request_args(request, stream=True)
        served = await asyncio.to_thread(self.served_model)
        client = self._async_client(request)
        assembler = StreamAssembler()
        try:
            chunks = await self._awith_retries(lambda: client.chat_completion(model=served, **args))
            try:
                async for chunk in chunks:
                    delta = assembler.push(chunk)
                    if delta is not None:
                        yield delta
            except _STREAM_CUT_ERRORS as exc:
                raise self._interrupted(exc, assembler) from exc
            yield assembler.finish(self._target().url)
        finally:
            await client.close()  # on cancellation too: the connection closes and the server stops

    # --------------------------------------------------------------------- text completion
    def _prompt_request(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> ChatRequest:
        # Servers and providers now serve chat completions; the prompt is sent as one user message.
        stops = [*self.stop_sequences, *(stop or [])]
        names = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "do_sample", "seed")
        values = {name: kwargs[name] for name in names if kwargs.get(name) is not None}
        if kwargs.get("max_tokens") is not None:
            values["max_new_tokens"] = kwargs["max_tokens"]
        return ChatRequest(
            messages=[{"role": "user", "content": prompt}], params=GenerationParams(stop=tuple(stops), **values)
        )

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        if self.streaming:
            return "".join(chunk.text for chunk in self._stream(prompt, stop, run_manager, **kwargs))
        return self.chat(self._prompt_request(prompt, stop, kwargs)).text

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        if self.streaming:
            return "".join([chunk.text async for chunk in self._astream(prompt, stop, run_manager, **kwargs)])
        return (await self.achat(self._prompt_request(prompt, stop, kwargs))).text

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        yield from stream_chunks(self.stream_chat(self._prompt_request(prompt, stop, kwargs)), run_manager)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for chunk in astream_chunks(self.astream_chat(self._prompt_request(prompt, stop, kwargs)), run_manager):
            yield chunk


def _thinking_fields(request: ChatRequest) -> dict[str, Any]:
    """The request's thinking switch the way OpenAI-compatible servers take it: ``chat_template_kwargs``
    (vLLM, SGLang, ``transformers serve`` hand it to the model's template) and ``reasoning_effort``."""
    fields: dict[str, Any] = {}
    if request.thinking is not None:
        fields["chat_template_kwargs"] = {"enable_thinking": request.thinking}
    if request.reasoning_effort is not None:
        fields["reasoning_effort"] = request.reasoning_effort
    return fields


def _input_error(exc: ValidationError) -> InvalidInputError:
    """Our own validators' errors as they were raised; pydantic's as one line naming the argument."""
    first = exc.errors()[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, InvalidInputError):
        return original
    where = ".".join(str(part) for part in first.get("loc", ())) or "arguments"
    return InvalidInputError(f"Invalid {where} for HuggingFaceEndpoint: {first.get('msg')}.")
