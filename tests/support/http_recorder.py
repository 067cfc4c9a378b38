"""A real local HTTP server (stdlib, 127.0.0.1) that records requests and answers with scripted replies.

It stands in for an OpenAI-compatible server where a test needs a status the real one never gives
(401, 429, a cut stream...) or must see exactly what the client sent (headers, body).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Reply:
    """One scripted answer.

    ``events`` makes it a server-sent-event stream (each a JSON object or a raw string); ``cut_after``
    drops the connection after that many events without ending the chunked body; ``event_delay``
    paces the events (seconds) so a client can disconnect mid-stream.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Any] | None = None
    cut_after: int | None = None
    event_delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def completion(content: str = "Hello.", **message: Any) -> dict[str, Any]:
    """A non-streaming chat completion body shaped like ``transformers serve``'s."""
    return {
        "id": "req-1",
        "object": "chat.completion",
        "created": 0,
        "model": "served-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def chunk(content: str | None = None, finish_reason: str | None = None, **delta: Any) -> dict[str, Any]:
    """One streamed ``chat.completion.chunk``."""
    body: dict[str, Any] = {
        "id": "req-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "served-model",
        "system_fingerprint": "",
        "choices": [{"index": 0, "delta": {**({"content": content} if content is not None else {}), **delta}}],
    }
    if finish_reason is not None:
        body["choices"][0]["finish_reason"] = finish_reason
    return body


class _QuietServer(ThreadingHTTPServer):
    """A client that drops its kept-alive connection is no error of the server's: socketserver would print its
    traceback to stderr, into the output of the test that happens to be capturing then."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RecordingServer:
    """Serves scripted replies in order (then ``default``) and records every request it receives."""

    def __init__(self, models: list[str] | None = None) -> None:
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.default = Reply(body=completion())
        self.respond: Callable[[Any], Reply] | None = None
        """When set, makes each POST's reply from its body (replies that depend on the request, in any order)."""
        self.models = models
        self.disconnected = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def posts(self) -> list[Recorded]:
        return [request for request in self.requests if request.method == "POST"]

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _record(self, body: Any) -> None:
                headers = {key.lower(): value for key, value in self.headers.items()}
                server.requests.append(Recorded(self.command, self.path, headers, body))

            def do_GET(self) -> None:
                self._record(None)
                if self.path.endswith("/v1/models") and server.models is not None:
                    data = [{"id": name, "object": "model", "owned_by": "local"} for name in server.models]
                    self._send(Reply(body={"object": "list", "data": data}))
                else:
                    self._send(Reply(status=404, body={"detail": "Not Found"}))

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                self._record(body)
                if server.respond is not None:
                    self._send(server.respond(body))
                else:
                    self._send(server.replies.popleft() if server.replies else server.default)

            def _send(self, reply: Reply) -> None:
                if reply.events is not None:
                    self._stream(reply)
                    return
                data = json.dumps(reply.body).encode() if not isinstance(reply.body, bytes) else reply.body
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                try:
                    for index, event in enumerate(reply.events or []):
                        if reply.cut_after is not None and index >= reply.cut_after:
                            self.close_connection = True
                            self.wfile.flush()
                            self.connection.shutdown(2)  # drop it: no terminating chunk
                            return
                        text = event if isinstance(event, str) else json.dumps(event)
                        payload = f"data: {text}\n\n".encode()
                        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                        self.wfile.flush()
                        if reply.event_delay:
                            time.sleep(reply.event_delay)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnected.set()  # the client went away mid-stream

        return Handler


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    """A RecordingServer that lists one served model, ``served-model``, at ``/v1/models``."""
    server = RecordingServer(models=["served-model"]).start()
    try:
        yield server
    finally:
        server.stop()
