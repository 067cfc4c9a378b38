"""What a request to an inference server is made of: where it goes (URLs, and whether a Hugging Face token may go
there) and the ``chat_completion`` arguments for a request's generation settings."""

from __future__ import annotations

from typing import Any, get_args
from urllib.parse import urlparse, urlunparse

from .. import config
from ..backend import ChatRequest, GenerationParams

# Hosts run by Hugging Face: the only ones a Hugging Face token is ever sent to.
_HF_DOMAINS = ("huggingface.co", "hf.co", "huggingface.cloud", "hf.space")


def known_providers() -> tuple[str, ...]:
    """The Inference Providers this huggingface_hub can route to (``"auto"`` not included); empty if it cannot tell.

    huggingface_hub lists them only as the ``PROVIDER_T`` literal of its inference package, which it checks at the
    first request; reading it here lets a wrong name fail at construction, in one line. tests/test_endpoint.py checks
    it still reads a list after upgrades.
    """
    try:
        from huggingface_hub.inference._providers import PROVIDER_T
    except ImportError:
        return ()
    return tuple(name for name in get_args(PROVIDER_T) if isinstance(name, str))


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


def chat_completions_url(endpoint_url: str) -> str:
    """The ``/v1/chat/completions`` route of a server given by its base, ``/v1`` or full route URL."""
    parsed = urlparse(endpoint_url)
    path = parsed.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions" if path.endswith("/v1") else "/v1/chat/completions"
    return urlunparse(parsed._replace(path=path))


def completion_args(params: GenerationParams) -> dict[str, Any]:
    """``chat_completion`` keyword arguments for ``params``; unset values are left to the server.

    ``top_k`` and ``repetition_penalty`` are not part of the OpenAI API: they go in ``extra_body``
    only when set, so servers that reject unknown fields are not sent them by default.
    """
    args: dict[str, Any] = {"max_tokens": params.token_budget}
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
    for name in ("presence_penalty", "frequency_penalty"):  # OpenAI's own fields: sent as such when set
        if getattr(params, name) is not None:
            args[name] = getattr(params, name)
    if params.logit_bias:
        args["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
    if params.logprobs:
        args["logprobs"] = True
        if params.top_logprobs is not None:
            args["top_logprobs"] = params.top_logprobs
    if extra:
        args["extra_body"] = extra
    return args


def thinking_fields(request: ChatRequest) -> dict[str, Any]:
    """The request's thinking switch the way OpenAI-compatible servers take it: ``chat_template_kwargs``
    (vLLM, SGLang, ``transformers serve`` hand it to the model's template) and ``reasoning_effort``."""
    fields: dict[str, Any] = {}
    if request.thinking is not None:
        fields["chat_template_kwargs"] = {"enable_thinking": request.thinking}
    if request.reasoning_effort is not None:
        fields["reasoning_effort"] = request.reasoning_effort
    return fields


def without_past_thinking(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` less earlier turns' thinking: servers re-render past turns with their own template, and some
    refuse thinking sent back (DeepSeek's API)."""
    return [
        {k: v for k, v in m.items() if k != "reasoning_content"} if "reasoning_content" in m else m for m in messages
    ]
