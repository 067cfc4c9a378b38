"""A reply streaming on another thread (as the panel's worker does), held after its first token: what other
actions on the same session meet while a reply is being generated."""

from __future__ import annotations

import threading

from hf_magic.notebook.session import ChatSession
from hf_magic.notebook.turns import SessionEvent


class HeldReply:
    """Starts ``session.send(text)`` on a thread and returns once its first token arrived; ``release()`` lets
    it finish. ``models_seen`` holds the ids of the chat models it streamed from; ``error`` what it raised."""

    def __init__(self, session: ChatSession, text: str, max_new_tokens: int = 24) -> None:
        self.session = session
        self.streaming, self._release = threading.Event(), threading.Event()
        self.models_seen: set[int] = set()
        self.error: BaseException | None = None
        self._unsubscribe = session.subscribe(self._hold)
        self._thread = threading.Thread(target=self._send, args=(text, max_new_tokens))
        self._thread.start()
        assert self.streaming.wait(600), "the reply never started"

    def _hold(self, event: SessionEvent) -> None:
        if event.kind == "token":
            self.models_seen.add(id(self.session.chat_model))
            if not self.streaming.is_set():
                self.streaming.set()
                self._release.wait(600)

    def _send(self, text: str, max_new_tokens: int) -> None:
        try:
            self.session.send(text, max_new_tokens=max_new_tokens)
        except BaseException as exc:  # checked by the test
            self.error = exc

    def release(self) -> None:
        self._release.set()
        self._thread.join(600)
        self._unsubscribe()
