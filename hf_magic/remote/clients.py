"""A chat-completions client for servers that are not Hugging Face's (TGI, vLLM, ``transformers serve``...).

huggingface_hub's ``InferenceClient`` serves Hugging Face's own hosts. For any other server it would add the
user's Hugging Face token, refuse to run under ``HF_HUB_OFFLINE`` and rewrite an OpenAI ``response_format``
into TGI's shape; its public API can turn none of that off. So other servers get this small client on
``httpx2`` (the HTTP library huggingface_hub itself uses): the OpenAI chat-completions request, the user's own
headers only, replies as JSON dicts that ``responses`` reads, errors raised by huggingface_hub's public
``hf_raise_for_status`` so they read the same as the hub's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, closing
from typing import Any

import httpx2
from huggingface_hub.errors import TextGenerationError
from huggingface_hub.utils import hf_raise_for_status

from .request_args import chat_completions_url

_DONE = "[DONE]"


def chat_payload(model: str | None, messages: list[dict[str, Any]], **args: Any) -> dict[str, Any]:
    """The JSON body: ``model`` first (a proxy can route on it), unset arguments left out, ``extra_body`` merged
    in last as the OpenAI clients do. Servers that serve one model ignore a placeholder name."""
    extra = args.pop("extra_body", None) or {}
    settings = {key: value for key, value in args.items() if value is not None}
    return {"model": model or "dummy", "messages": messages, **settings, **extra}


def parse_stream_line(line: str) -> dict[str, Any] | None:
    """One server-sent-events line of a streamed reply: its chunk, ``None`` for anything else.

    Raises:
        StopIteration: the ``[DONE]`` line.
        TextGenerationError: the server reported an error in the stream (the reply is cut).
        json.JSONDecodeError: a line that is not JSON (the stream is broken).
    """
    if not line.startswith("data:"):
        return None
    data = line[len("data:") :].strip()
    if data == _DONE:
        raise StopIteration
    chunk = json.loads(data)
    if isinstance(chunk, dict) and chunk.get("error") is not None:
        raise TextGenerationError(f"The server reported an error mid-stream: {chunk['error']}")
    return chunk if isinstance(chunk, dict) else None


class DirectChatClient:
    """``chat_completion`` against one server over a shared ``httpx2.Client``; ``close()`` ends an open stream
    (the server stops generating) and leaves the shared client open for the next request."""

    def __init__(
        self,
        http: httpx2.Client,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._http, self._url, self._timeout = http, chat_completions_url(url), timeout
        self._headers, self._cookies = dict(headers or {}), cookies
        self._open = ExitStack()

    def chat_completion(
        self, *, model: str | None, messages: list[dict[str, Any]], stream: bool = False, **args: Any
    ) -> Any:
        """The reply as a dict, or (``stream=True``) an iterator of chunk dicts."""
        payload = chat_payload(model, messages, stream=stream or None, **args)
        request = self._http.build_request(
            "POST", self._url, json=payload, headers=self._headers, cookies=self._cookies, timeout=self._timeout
        )
        response = self._open.enter_context(closing(self._http.send(request, stream=True)))
        if response.status_code >= 400:
            response.read()  # so the error can quote the server's explanation
        hf_raise_for_status(response)
        if not stream:
            response.read()
            return response.json()
        return _chunks(response.iter_lines())

    def close(self) -> None:
        self._open.close()


class AsyncDirectChatClient:
    """``DirectChatClient`` for asyncio, on an ``httpx2.AsyncClient`` of its own that ``close()`` closes."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._http = httpx2.AsyncClient(follow_redirects=True, timeout=None)
        self._url, self._timeout = chat_completions_url(url), timeout
        self._headers, self._cookies = dict(headers or {}), cookies
        self._open = AsyncExitStack()

    async def chat_completion(
        self, *, model: str | None, messages: list[dict[str, Any]], stream: bool = False, **args: Any
    ) -> Any:
        """The reply as a dict, or (``stream=True``) an async iterator of chunk dicts."""
        payload = chat_payload(model, messages, stream=stream or None, **args)
        request = self._http.build_request(
            "POST", self._url, json=payload, headers=self._headers, cookies=self._cookies, timeout=self._timeout
        )
        response = await self._http.send(request, stream=True)
        self._open.push_async_callback(response.aclose)
        if response.status_code >= 400:
            await response.aread()
        hf_raise_for_status(response)
        if not stream:
            await response.aread()
            return response.json()
        return _achunks(response.aiter_lines())

    async def close(self) -> None:
        await self._open.aclose()
        await self._http.aclose()


def _chunks(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            chunk = parse_stream_line(line.strip())
        except StopIteration:
            return
        if chunk is not None:
            yield chunk


async def _achunks(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines:
        try:
            chunk = parse_stream_line(line.strip())
        except StopIteration:
            return
        if chunk is not None:
            yield chunk
