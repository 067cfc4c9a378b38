"""Independent requests sent a bounded number at a time, for backends that do not batch (a remote endpoint).

Each request streams on a worker thread, so a stop is seen at the next chunk: the worker closes its stream, which
closes the connection, and the server stops generating. A server's 429 / 503 is retried inside the backend
(``remote/retries.py``) on that request's own thread, so one throttled row waits while the others go on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

from .backend import ChatBackend, ChatDelta, ChatRequest, join_deltas
from .errors import HfMagicError

DEFAULT_CONCURRENCY = 8
"""Requests in flight at once when the caller does not say."""

_POLL_SECONDS = 0.1
"""How often the waiting thread wakes: a KeyboardInterrupt reaches it between waits."""


def concurrent_replies(
    backend: ChatBackend,
    requests: Sequence[ChatRequest],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    cancel: threading.Event | None = None,
) -> Iterator[tuple[int, ChatDelta | HfMagicError]]:
    """Each request's whole reply (or its error) as ``(index, reply)``, in the order they finish, with at most
    ``concurrency`` requests in flight. ``cancel``, closing the iterator or an exception in the caller (Ctrl-C)
    stops the requests still streaming; replies already handed back stay handed back.
    """
    cancel = cancel or threading.Event()
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(requests)):
        todo.put(index)
    finished: queue.SimpleQueue[tuple[int, ChatDelta | HfMagicError | None]] = queue.SimpleQueue()

    def work() -> None:
        while not cancel.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            finished.put((index, _reply(backend, requests[index], cancel)))

    workers = [
        threading.Thread(target=work, name="hf_magic-request", daemon=True)
        for _ in range(max(1, min(concurrency, len(requests))))
    ]
    for worker in workers:
        worker.start()
    try:
        received = 0
        while received < len(requests):
            try:
                index, reply = finished.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not any(worker.is_alive() for worker in workers) and finished.empty():
                    return  # cancelled: the workers left the rest unsent
                continue
            received += 1
            if reply is not None:
                yield index, reply
    finally:
        # Workers still streaming close their streams at the next chunk; nobody waits for them (a server that is
        # slow to send its first byte must not hold up the notebook).
        cancel.set()


def _reply(backend: ChatBackend, request: ChatRequest, cancel: threading.Event) -> ChatDelta | HfMagicError | None:
    """The whole reply to ``request``, its error, or ``None`` when ``cancel`` was set while it streamed."""
    stream = backend.stream_chat(request)
    deltas: list[ChatDelta] = []
    try:
        for delta in stream:
            if cancel.is_set():
                return None
            deltas.append(delta)
    except HfMagicError as exc:
        return exc
    except Exception as exc:  # one row's failure never stops the others
        return HfMagicError(f"Generation failed: {type(exc).__name__}: {exc}")
    finally:
        close = getattr(stream, "close", None)
        if callable(close):
            close()
    return join_deltas(deltas)
