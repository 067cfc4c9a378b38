"""huggingface_hub inference clients for servers that are not Hugging Face's (no token, no offline switch)."""

from __future__ import annotations

from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.utils import hf_raise_for_status


class DirectInferenceClient(InferenceClient):
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


class DirectAsyncInferenceClient(AsyncInferenceClient):
    """``DirectInferenceClient`` for asyncio: its own HTTP client, closed with ``close()``."""

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
