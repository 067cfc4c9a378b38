"""HuggingFaceEndpoint: a remote model (Inference Providers, an Inference Endpoint, or any OpenAI-compatible
server such as TGI, vLLM or ``transformers serve``) as a langchain LLM and as a chat backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient, InferenceClient, get_token
from huggingface_hub.errors import TextGenerationError
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import GenerationChunk
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, model_validator

from .. import config
from ..backend import ChatDelta, ChatRequest, GenerationParams
from ..errors import InvalidInputError, StreamInterruptedError, input_error
from ..images import embed_local_images
from ..text_completion import astream_chunks, stream_chunks
from .clients import AsyncDirectChatClient, DirectChatClient
from .endpoint_errors import EndpointTarget, endpoint_error
from .forced_calls import ForcedCall, ForcedToolCalls, as_schema_request, forced_tool
from .request_args import (
    completion_args,
    is_huggingface_url,
    known_providers,
    models_url,
    thinking_fields,
    without_past_thinking,
)
from .responses import StreamAssembler, delta_from_output
from .retries import Retries

SUPPORTED_TASKS = ("text-generation", "conversational", "text2text-generation", "summarization")

# A transport failure while a reply streams in: the reply is cut, what arrived is kept.
_STREAM_CUT_ERRORS = (httpx2.TransportError, httpx2.StreamError, TextGenerationError, json.JSONDecodeError)


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
    forced_tool_calls: ForcedToolCalls = "tool_choice"
    """How a call of one forced tool is asked for: ``tool_choice`` (the server's tool-call grammar), or
    ``json_schema`` (the tool's parameters as a response format, read back as the call: see forced_calls.py)."""

    model_config = ConfigDict(protected_namespaces=())

    _http: httpx2.Client | None = PrivateAttr(default=None)
    _served_model: str | None = PrivateAttr(default=None)
    _served_model_known: bool = PrivateAttr(default=False)

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise input_error(exc, "HuggingFaceEndpoint") from exc

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
        providers = known_providers()
        if self.provider is not None and providers and self.provider not in ("auto", *providers):
            raise InvalidInputError(
                f"Unknown provider {self.provider!r}: use 'auto' (the default) or one of {', '.join(providers)}; "
                "for your own server pass endpoint_url instead."
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

    def _hub_client_kwargs(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "timeout": self.timeout,
            "token": self._token(),
            "provider": self.provider,
            **self.server_kwargs,
        }

    def _direct_client_kwargs(self) -> dict[str, Any]:
        # Only the user's own headers and cookies: never a Hugging Face token, and bill_to is Hugging Face's.
        kwargs = {key: self.server_kwargs[key] for key in ("headers", "cookies") if self.server_kwargs.get(key)}
        return {"timeout": self.timeout, **kwargs}

    def _sync_client(self) -> InferenceClient | DirectChatClient:
        if self.on_hub:
            return InferenceClient(**self._hub_client_kwargs())
        assert self.endpoint_url is not None
        if self._http is None:  # kept between requests: its connections are reused
            self._http = httpx2.Client(follow_redirects=True, timeout=None)
        return DirectChatClient(self._http, self.endpoint_url, **self._direct_client_kwargs())

    def _async_client(self) -> AsyncInferenceClient | AsyncDirectChatClient:
        if self.on_hub:
            return AsyncInferenceClient(**self._hub_client_kwargs())
        assert self.endpoint_url is not None
        return AsyncDirectChatClient(self.endpoint_url, **self._direct_client_kwargs())

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

    def _forced_call(self, request: ChatRequest) -> ForcedCall | None:
        tool = forced_tool(request) if self.forced_tool_calls == "json_schema" else None
        return ForcedCall(tool) if tool is not None else None

    def _request_args(self, request: ChatRequest, stream: bool, forced: ForcedCall | None = None) -> dict[str, Any]:
        params = self.default_params().merged(request.params)
        args = completion_args(params)
        if self.model_kwargs:
            args["extra_body"] = {**self.model_kwargs, **args.get("extra_body", {})}
        if request.tools:
            args["tools"] = request.tools
            if request.tool_choice is not None:
                args["tool_choice"] = request.tool_choice
        if request.response_format is not None:
            # A json_object's "schema" (json_mode with a schema) is hf_magic's local hint; OpenAI's form has none.
            args["response_format"] = {k: v for k, v in request.response_format.items() if k != "schema"}
        thinking = thinking_fields(request)
        if thinking:
            args["extra_body"] = {**args.get("extra_body", {}), **thinking}
        if stream:
            args["stream"] = True
            args["stream_options"] = {"include_usage": True}
        # OpenAI-shaped already (chat_format); a local image file becomes a data URL, which the server can read.
        # Earlier turns' thinking stays here: servers re-render past turns with their own template.
        args["messages"] = without_past_thinking(embed_local_images(request.messages))
        return as_schema_request(args, forced.tool) if forced else args

    # ----------------------------------------------------------------- retries and errors
    def _retries(self) -> Retries:
        return Retries(self.max_retries, self._target(), self._secrets())

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
        forced = self._forced_call(request)
        args = self._request_args(request, stream=False, forced=forced)
        client = self._sync_client()
        try:
            output = self._retries().call(lambda: client.chat_completion(model=self.served_model(), **args))
        finally:
            client.close()
        delta = delta_from_output(output)
        return forced.whole(delta) if forced else delta

    async def achat(self, request: ChatRequest) -> ChatDelta:
        forced = self._forced_call(request)
        args = self._request_args(request, stream=False, forced=forced)
        served = await asyncio.to_thread(self.served_model)
        client = self._async_client()
        try:
            output = await self._retries().acall(lambda: client.chat_completion(model=served, **args))
        finally:
            await client.close()
        delta = delta_from_output(output)
        return forced.whole(delta) if forced else delta

    def stream_chat(self, request: ChatRequest) -> Iterator[ChatDelta]:
        forced = self._forced_call(request)
        args = self._request_args(request, stream=True, forced=forced)
        client = self._sync_client()
        assembler = StreamAssembler()
        try:
            chunks = self._retries().call(lambda: client.chat_completion(model=self.served_model(), **args))
            try:
                for chunk in chunks:
                    delta = assembler.push(chunk)
                    if delta is not None:
                        yield forced.chunk(delta) if forced else delta
            except _STREAM_CUT_ERRORS as exc:
                raise self._interrupted(exc, assembler) from exc
            last = assembler.finish(self._target().url)
            yield forced.chunk(last) if forced else last
        finally:
            client.close()  # closes the response: a stream left early stops the server's generation

    async def astream_chat(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        forced = self._forced_call(request)
        args = self._request_args(request, stream=True, forced=forced)
        served = await asyncio.to_thread(self.served_model)
        client = self._async_client()
        assembler = StreamAssembler()
        try:
            chunks = await self._retries().acall(lambda: client.chat_completion(model=served, **args))
            try:
                async for chunk in chunks:
                    delta = assembler.push(chunk)
                    if delta is not None:
                        yield forced.chunk(delta) if forced else delta
            except _STREAM_CUT_ERRORS as exc:
                raise self._interrupted(exc, assembler) from exc
            last = assembler.finish(self._target().url)
            yield forced.chunk(last) if forced else last
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
