"""Failures of a remote endpoint as one-line ``EndpointError``s, and when a failed request is worth retrying."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import EndpointError

RETRY_STATUSES = frozenset({429, 503})
"""Statuses that mean "not now" (rate limit, model loading, overloaded): retried with backoff."""

MAX_RETRY_WAIT_S = 30.0
"""The longest wait between retries; a server asking for more is reported instead of waited for."""

_TOKENS_PAGE = "https://huggingface.co/settings/tokens"
_DETAIL_LENGTH = 200


@dataclass(frozen=True)
class EndpointTarget:
    """What an error message names: where requests went, which model, and whether a token was sent."""

    url: str
    model: str | None = None
    token_sent: bool = False
    on_hub: bool = False
    timeout: float | None = None


def status_of(error: BaseException) -> int | None:
    """The HTTP status of a failed request, when the failure was an HTTP answer."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def retry_delay(error: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retry number ``attempt`` (0-based), or None when ``error`` is not retryable.

    Honours the server's ``Retry-After`` (seconds or an HTTP date); otherwise backs off 1, 2, 4... s.
    A wait longer than ``MAX_RETRY_WAIT_S`` returns None: the caller reports it rather than blocking.
    """
    if status_of(error) not in RETRY_STATUSES:
        return None
    asked = retry_after_seconds(error)
    delay = asked if asked is not None else float(2**attempt)
    return delay if delay <= MAX_RETRY_WAIT_S else None


def retry_after_seconds(error: BaseException) -> float | None:
    """The ``Retry-After`` header of a failed response, in seconds from now."""
    response = getattr(error, "response", None)
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def endpoint_error(error: BaseException, target: EndpointTarget, secrets: Iterable[str] = ()) -> EndpointError:
    """One clear ``EndpointError`` for ``error``; ``secrets`` are blanked from anything quoted from the server."""
    message = _message(error, target)
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return EndpointError(message)


def _message(error: BaseException, target: EndpointTarget) -> str:
    url = target.url
    name = type(error).__name__
    if name == "OfflineModeIsEnabled":
        return f"HF_HUB_OFFLINE is set, so {url} cannot be reached: unset HF_HUB_OFFLINE, or use a local endpoint_url."
    if name in ("InferenceTimeoutError",) or "Timeout" in name:
        return f"{url} did not answer within {target.timeout} s: raise timeout=, or check that the server is not stuck."
    status = status_of(error)
    if status is None:
        if name in ("ConnectError", "ConnectionError", "ProxyError") or isinstance(error, ConnectionError):
            check = (
                "check your internet connection"
                if target.on_hub
                else "check that the server is running and that the host and port in endpoint_url are right"
            )
            return f"Cannot reach {url}: {check}."
        return f"Request to {url} failed ({name}: {_detail_of(error)}): check endpoint_url and the server's logs."
    detail = _detail_of(error)
    model = target.model
    if status == 401 or (status == 403 and not target.token_sent):
        if not target.token_sent:
            return (
                f"{url} needs a Hugging Face token ({status}): set HF_TOKEN, or pass huggingfacehub_api_token=; "
                f"create one at {_TOKENS_PAGE}."
            )
        return f"{url} refused the token ({status}): check that it is valid and allows inference at {_TOKENS_PAGE}."
    if status == 403:
        if model and target.on_hub:
            return (
                f"Access to {model} is gated or restricted ({status}): request access at "
                f"https://huggingface.co/{model} and use a token of an account that has it."
            )
        return f"{url} refused access ({status}): check the credentials it expects ({detail})."
    if status == 404:
        what = f"Model {model!r}" if model else "The chat completions route"
        return f"{what} was not found at {url} (404): check repo_id / the model name the server serves ({detail})."
    if status == 429:
        return f"{url} is rate-limiting requests (429){_asked_wait(error)}: wait a little and try again."
    if status == 503:
        subject = model or url
        return f"{subject} is loading or overloaded (503){_asked_wait(error)}: try again in a minute."
    if 400 <= status < 500:
        return f"{url} rejected the request ({status}: {detail}): change the argument it names."
    return f"{url} failed ({status}: {detail}): retry, or check the server's logs."


def _asked_wait(error: BaseException) -> str:
    asked = retry_after_seconds(error)
    return f", it asks to retry in {asked:.0f} s" if asked is not None else ", still after retries"


def _detail_of(error: BaseException) -> str:
    """The server's own explanation, on one short line."""
    response = getattr(error, "response", None)
    text = ""
    if response is not None:
        try:
            text = response.text
        except Exception:  # a streamed body that was never read: fall back to the exception's text
            text = ""
    text = text or str(error)
    text = " ".join(text.split())
    return text[:_DETAIL_LENGTH] + ("..." if len(text) > _DETAIL_LENGTH else "")
