"""ChatSession: one chat model, its transcript and usage tally; what the magic and the panel share.

Its operations (load, send, stop, reset, history, restore) share one lock and one event stream. What they work with
lives beside it: the loaded model in model_slot.py, a reply streaming into a turn in reply_stream.py, the records in
turns.py, transcript files in transcript.py. Capabilities (the tool loop, a prompt over rows, the turn log) are
collaborators that use the public methods and events, not code in here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from ..backend import ChatDelta, Usage
from ..chat_models import ChatHuggingFace
from ..errors import HfMagicError, InvalidInputError
from ..progress import ProgressCallback, ProgressEvent
from . import transcript
from .model_slot import ModelSlot, noted
from .model_spec import ModelSpec
from .reply_stream import ReplyCallbacks, ReplyContext, Responder, single_reply
from .turns import SessionEvent, SessionListener, Settings, Turn


class ChatSession:
    """A conversation with one loaded chat model, shared by ``%%hfchat`` cells and the panel.

    Example:
        >>> session = get_session()
        >>> turn = session.send("What is the capital of France?")
        >>> turn.reply, turn.usage.total_tokens
    """

    def __init__(self, name: str = "default", spec: ModelSpec | None = None, settings: Settings | None = None) -> None:
        self.name = name
        self._slot = ModelSlot(spec)
        self.settings = settings or Settings()
        self.turns: list[Turn] = []
        self._listeners: list[SessionListener] = []
        # Load, send, reset and the like hold this lock, so a panel and a cell acting at once take turns and
        # never swap the model or rewrite the transcript under a reply. Reentrant: send loads under it.
        self._lock = threading.RLock()
        self._replying = False
        self._cancel = threading.Event()

    # ----------------------------------------------------------------------------- events
    def subscribe(self, listener: SessionListener) -> Callable[[], None]:
        """Call ``listener`` on every session event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, event: SessionEvent) -> None:
        """Tell every listener; a listener that raises is skipped, never the conversation."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken view must not break the conversation
                pass

    # --------------------------------------------------------------------------- locking
    @contextmanager
    def exclusive(self, action: str) -> Iterator[None]:
        """Hold the session for ``action`` (a load, a reset, a whole ``%%hfchat`` cell...).

        Waits while another thread loads or resets; refuses at once while a reply is being generated,
        since that can take minutes and only Stop ends it early.

        Raises:
            InvalidInputError: a reply is being generated (on any thread); ``action`` says what was refused.
        """
        if not self._lock.acquire(blocking=False):
            if self._replying:
                raise InvalidInputError(self._refusal(action))
            self._lock.acquire()
        try:
            if self._replying:  # this same thread is mid-reply: a listener acting on the session
                raise InvalidInputError(self._refusal(action))
            yield
        finally:
            self._lock.release()

    @staticmethod
    def _refusal(action: str) -> str:
        return f"A reply is being generated in this session: wait for it or press Stop, then {action}."

    # ------------------------------------------------------------------------------ model
    @property
    def spec(self) -> ModelSpec:
        """The model the session is on, or loads at its next message."""
        return self._slot.spec

    @spec.setter
    def spec(self, spec: ModelSpec) -> None:
        self._slot.spec = spec

    @property
    def chat_model(self) -> ChatHuggingFace | None:
        """The loaded chat model (``None`` before the first load and after ``unload``)."""
        return self._slot.chat_model

    @property
    def loaded(self) -> bool:
        return self._slot.chat_model is not None

    def load(self, spec: ModelSpec | None = None, progress: ProgressCallback | None = None) -> ChatHuggingFace:
        """Load ``spec`` (default: the session's) unless that exact model is loaded already.

        The transcript is kept across model changes. The new model is loaded before the old one is let go,
        so on failure the session stays on the model (and spec) it had. An endpoint is built without
        contacting its server: the previous model is kept until the endpoint's first reply, and a failed first
        reply switches back (see ``send``).

        Raises:
            InvalidInputError: a reply is being generated.
            HfMagicError: the model cannot be loaded; the message says which model the session is still on.
        """
        with self.exclusive("load another model"):
            return self._load_locked(spec or self.spec, progress)

    def use_model(self, chat_model: ChatHuggingFace, spec: ModelSpec | None = None) -> None:
        """Put a chat model built elsewhere in the session, as if ``spec`` (default: the session's) had been
        loaded; the transcript is kept.

        Raises:
            InvalidInputError: a reply is being generated.
        """
        with self.exclusive("change the model"):
            self._slot.use(chat_model, spec or self.spec)
            self.emit(SessionEvent("model_loaded"))

    def _load_locked(self, spec: ModelSpec, progress: ProgressCallback | None) -> ChatHuggingFace:
        def report(event: ProgressEvent) -> None:
            if progress:
                progress(event)
            self.emit(SessionEvent("progress", progress=event))

        chat_model, changed = self._slot.load(spec, report)
        if changed:
            self.emit(SessionEvent("model_loaded"))
        return chat_model

    def unload(self, notify: bool = True) -> None:
        """Drop the loaded model and its caches, and give the memory back.

        Raises:
            InvalidInputError: a reply is being generated.
        """
        with self.exclusive("unload the model"):
            if self._slot.unload() and notify:
                self.emit(SessionEvent("model_unloaded"))

    # ------------------------------------------------------------------------ conversation
    def reset(self) -> None:
        """Forget the conversation (the model stays loaded).

        Raises:
            InvalidInputError: a reply is being generated.
        """
        with self.exclusive("reset the conversation"):
            self.turns.clear()
            self._drop_kv_cache()
            self.emit(SessionEvent("reset"))

    def _drop_kv_cache(self) -> None:
        reset_cache = getattr(getattr(self.chat_model, "llm", None), "reset_cache", None)
        if callable(reset_cache):
            reset_cache()

    def history_before(self, key: str | None = None) -> list[Turn]:
        """The turns a new message follows: all of them, or those before the turn sent by ``key``."""
        for index, turn in enumerate(self.turns):
            if key is not None and turn.key == key:
                return self.turns[:index]
        return list(self.turns)

    def build_messages(
        self, text: str, key: str | None = None, images: Sequence[dict[str, Any]] = ()
    ) -> list[BaseMessage]:
        history = self.history_before(key)
        if self.settings.history_limit is not None:
            history = history[-self.settings.history_limit :] if self.settings.history_limit > 0 else []
        messages: list[BaseMessage] = []
        if self.settings.system_prompt:
            messages.append(SystemMessage(content=self.settings.system_prompt))
        for turn in history:
            messages += turn.messages()
        messages.append(HumanMessage(content=Turn(user=text, images=list(images)).user_content()))
        return messages

    def stop(self) -> None:
        """Ask the reply being generated to stop; its partial text is kept, marked interrupted. Capabilities that
        generate for the session (a prompt over a table) hear it as a "stop_requested" event."""
        self._cancel.set()
        self.emit(SessionEvent("stop_requested"))

    @property
    def busy(self) -> bool:
        """True while a message is being answered (loading for it included)."""
        return self._replying

    def send(
        self,
        text: str,
        *,
        key: str | None = None,
        spec: ModelSpec | None = None,
        on_token: Callable[[str], None] | None = None,
        progress: ProgressCallback | None = None,
        images: Sequence[dict[str, Any]] = (),
        on_reasoning: Callable[[str], None] | None = None,
        responder: Responder | None = None,
        **overrides: Any,
    ) -> Turn:
        """Send ``text`` (after ``images``: image content blocks, ``hf_magic.images.image_block``), stream the reply
        to ``on_token`` and listeners, record and return the turn.

        ``key`` names the sender (a notebook cell): a turn with the same key is replaced in place.
        ``on_reasoning`` receives the model's thinking as it comes (also sent to listeners as "reasoning" events).
        ``responder`` writes the reply (default: one model call); the tool loop (``tool_loop.ToolLoop``) is one.
        ``spec`` is loaded first (default: the session's). ``overrides`` are per-call generation settings
        (``temperature``, ``max_new_tokens``...). A KeyboardInterrupt or ``stop()`` ends the reply early: it is
        kept with ``interrupted=True``. The first reply of a newly chosen endpoint proves it: if it fails, the
        session goes back to the model it had, and the error says so.

        Raises:
            InvalidInputError: empty message, a prompt over the context window, or a reply is already being
                generated.
            HfMagicError: loading or generation failed; the transcript and loaded model are unchanged.
        """
        if not text or not text.strip():
            raise InvalidInputError("The message is empty: type something to send.")
        with self.exclusive("send the next message"):
            self._replying = True
            try:
                return self._send_locked(
                    text, key, spec, on_token, progress, overrides, list(images), on_reasoning, responder
                )
            finally:
                self._replying = False

    def _send_locked(
        self,
        text: str,
        key: str | None,
        spec: ModelSpec | None,
        on_token: Callable[[str], None] | None,
        progress: ProgressCallback | None,
        overrides: dict[str, Any],
        images: list[dict[str, Any]] | None = None,
        on_reasoning: Callable[[str], None] | None = None,
        responder: Responder | None = None,
    ) -> Turn:
        self._cancel.clear()
        chat_model = self._load_locked(spec or self.spec, progress)
        messages = self.build_messages(text, key, images or ())
        kwargs = {**self.settings.call_kwargs(), **{k: v for k, v in overrides.items() if v is not None}}
        turn = Turn(user=text, model=self.spec.model, system_prompt=self.settings.system_prompt, key=key)
        turn.images = list(images or [])
        self.emit(SessionEvent("turn_started", turn=turn))
        callbacks = ReplyCallbacks(self.emit, on_token, on_reasoning)
        start = time.perf_counter()
        try:
            context = ReplyContext(
                turn, messages, kwargs, callbacks, self._cancel, start, lambda m, k: self._stream(chat_model, m, k)
            )
            (responder or single_reply)(context)
        except KeyboardInterrupt:
            turn.interrupted = True
        except Exception as exc:
            error = self._failed(turn, exc)
            if error is exc:
                raise
            raise error from exc
        turn.duration = time.perf_counter() - start
        if turn.interrupted:
            turn.finish_reason = "interrupted"
        self._record(turn)
        self.emit(SessionEvent("turn_finished", turn=turn))
        return turn

    def _failed(self, turn: Turn, exc: Exception) -> HfMagicError:
        """The error to raise for a reply that failed, after telling the listeners.

        A bad request is the caller's to fix; anything else before the first word means the new model (an endpoint
        nobody had tried yet) does not work: the session goes back to the one it replaced (``revert`` does nothing
        once the model has answered), and the error says so.
        """
        error = (
            exc if isinstance(exc, HfMagicError) else HfMagicError(f"Generation failed: {type(exc).__name__}: {exc}")
        )
        if not isinstance(exc, InvalidInputError):
            previous = self._slot.revert()
            if previous is not None:
                self.emit(SessionEvent("model_loaded" if self.loaded else "model_unloaded"))
                error = noted(error, self._slot.still_on(previous))
        self.emit(SessionEvent("turn_failed", turn=turn, error=str(error)))
        return error

    def _stream(
        self, chat_model: ChatHuggingFace, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> Iterator[ChatDelta]:
        stream = chat_model.stream_deltas(messages, **kwargs)
        try:
            for delta in stream:
                self._slot.proven()  # the new model answered: the one it replaced can go
                yield delta
        finally:
            stream.close()  # stops generation at the next token when the loop ended early

    def _record(self, turn: Turn) -> None:
        for index, existing in enumerate(self.turns):
            if turn.key is not None and existing.key == turn.key:
                self.turns[index] = turn
                return
        self.turns.append(turn)

    # ------------------------------------------------------------------------------ usage
    def usage_total(self) -> Usage:
        total = Usage()
        for turn in self.turns:
            if turn.usage:
                total.input_tokens += turn.usage.input_tokens
                total.output_tokens += turn.usage.output_tokens
        return total

    @property
    def context_length(self) -> int | None:
        llm = getattr(self.chat_model, "llm", None)
        value = getattr(llm, "context_length", None)
        return int(value) if isinstance(value, int) else None

    def context_fill(self) -> tuple[int, int | None]:
        """Tokens the conversation occupies now (last turn's prompt + reply) and the model's maximum."""
        last = next((t for t in reversed(self.turns) if t.usage), None)
        return (last.usage.total_tokens if last and last.usage else 0), self.context_length

    # ------------------------------------------------------------------------ persistence
    def chat_messages(self, turns: list[Turn] | None = None) -> list[dict[str, Any]]:
        """The conversation (default: the whole transcript) as chat messages, ``{"role", "content"}`` with the
        system prompt first when set: what ``tokenizer.apply_chat_template`` and OpenAI-style clients read."""
        return transcript.chat_messages(self.turns if turns is None else turns, self.settings.system_prompt)

    def export(self, path: str | Path, include_reasoning: bool = False) -> Path:
        """Write the transcript as Markdown (``.md``) or reloadable JSON (``.json``).

        The JSON holds ``turns`` (what ``load_transcript`` reads back, with usage, timings and the models'
        thinking) and ``messages`` (``chat_messages()``, for other tools). Markdown leaves the thinking out
        unless ``include_reasoning``.

        Raises:
            InvalidInputError: another suffix, a folder that does not exist, or a file that cannot be written.
        """
        return transcript.export(
            path,
            list(self.turns),
            name=self.name,
            spec=asdict(self.spec),
            settings=asdict(self.settings),
            include_reasoning=include_reasoning,
        )

    def load_transcript(self, path: str | Path) -> None:
        """Replace the transcript with one exported as JSON (the loaded model is kept).

        Raises:
            InvalidInputError: no such file, not an export, or a reply is being generated.
        """
        turns, system_prompt = transcript.read(path)
        self.restore_turns(turns, system_prompt, action="load a transcript")

    def restore_turns(self, turns: list[Turn], system_prompt: str | None = None, action: str = "restore turns") -> None:
        """Replace the transcript with ``turns`` (and the system prompt, when given); the loaded model is kept.

        Raises:
            InvalidInputError: a reply is being generated.
        """
        with self.exclusive(action):
            self.turns = list(turns)
            if system_prompt is not None:
                self.settings = replace(self.settings, system_prompt=system_prompt)
            self._drop_kv_cache()
            self.emit(SessionEvent("transcript_loaded"))


_SESSIONS: dict[str, ChatSession] = {}
_ON_CREATED: list[Callable[[ChatSession], None]] = []


def get_session(name: str = "default") -> ChatSession:
    """The kernel-wide session called ``name``, created on first use (and shown to ``on_session_created`` hooks)."""
    if name not in _SESSIONS:
        _SESSIONS[name] = session = ChatSession(name)
        for hook in list(_ON_CREATED):
            hook(session)
    return _SESSIONS[name]


def on_session_created(hook: Callable[[ChatSession], None]) -> None:
    """Call ``hook`` with every kernel-wide session, those there are and each one created later (the turn log)."""
    if hook not in _ON_CREATED:
        _ON_CREATED.append(hook)
        for session in list(_SESSIONS.values()):
            hook(session)


def all_sessions() -> dict[str, ChatSession]:
    return dict(_SESSIONS)
