"""ChatSession: one chat model, its transcript and usage tally; what the magic and the panel share.

It runs past 400 lines because its operations (load, send, stop, reset, history, restore) share one lock and one
event stream; its records live in turns.py and its transcript files in transcript.py.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from ..backend import ChatDelta, Usage
from ..chat_models import ChatHuggingFace
from ..errors import HfMagicError, InvalidInputError
from ..progress import ProgressCallback, ProgressEvent
from . import transcript
from .model_spec import ModelSpec, load_chat_model, release_chat_model
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
        self.spec = spec or ModelSpec()
        self.settings = settings or Settings()
        self.turns: list[Turn] = []
        self.chat_model: ChatHuggingFace | None = None
        self._loaded_spec: ModelSpec | None = None
        self._listeners: list[SessionListener] = []
        # Load, send, reset and the like hold this lock, so a panel and a cell acting at once take turns and
        # never swap the model or rewrite the transcript under a reply. Reentrant: send loads under it.
        self._lock = threading.RLock()
        self._replying = False
        self._cancel = threading.Event()
        self._fallback: tuple[ChatHuggingFace | None, ModelSpec] | None = None
        """The model (and spec) to go back to while a new endpoint has not answered yet."""

    # ----------------------------------------------------------------------------- events
    def subscribe(self, listener: SessionListener) -> Callable[[], None]:
        """Call ``listener`` on every session event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, event: SessionEvent) -> None:
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
    def loaded(self) -> bool:
        return self.chat_model is not None

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

    def _load_locked(self, spec: ModelSpec, progress: ProgressCallback | None) -> ChatHuggingFace:
        if self.chat_model is not None and spec == self._loaded_spec:
            self.spec = spec
            return self.chat_model
        previous_model, previous_spec = self._fallback or (None, None)
        if previous_model is not None and previous_spec == spec:
            # Back to the model an untried endpoint replaced: it is still in memory.
            untried = self.chat_model
            self.chat_model, self.spec = previous_model, spec
            self._loaded_spec, self._fallback = spec, None
            self._let_go(untried)
            self._emit(SessionEvent("model_loaded"))
            return previous_model

        def report(event: ProgressEvent) -> None:
            if progress:
                progress(event)
            self._emit(SessionEvent("progress", progress=event))

        current = self._current_spec()
        try:
            chat_model = load_chat_model(spec, report)
        except HfMagicError as exc:
            raise _noted(exc, self._still_on(current)) from exc
        except Exception as exc:
            message = f"Loading {spec.describe()} failed: {type(exc).__name__}: {exc}. {self._still_on(current)}"
            raise HfMagicError(message) from exc
        if spec.backend == "endpoint":
            # Unproven until it answers: keep what to go back to (the first model an untried chain replaced).
            replaced = self.chat_model
            self._fallback = self._fallback or (self.chat_model, current)
            self.chat_model, self._loaded_spec, self.spec = chat_model, spec, spec
            self._let_go(replaced)
        else:
            self._unload_locked(notify=False)
            self.chat_model, self._loaded_spec, self.spec = chat_model, spec, spec
        self._emit(SessionEvent("model_loaded"))
        return chat_model

    def _let_go(self, *models: ChatHuggingFace | None) -> None:
        """Models the session no longer holds give back what they hold outside this process (a started engine)."""
        kept = (self.chat_model, self._fallback[0] if self._fallback else None)
        for model in models:
            if model is not None and not any(model is held for held in kept):
                release_chat_model(model)

    def _current_spec(self) -> ModelSpec:
        return self._loaded_spec if self.chat_model is not None and self._loaded_spec is not None else self.spec

    def _still_on(self, spec: ModelSpec) -> str:
        loaded = self.chat_model is not None and spec == self._loaded_spec
        return f"The session is still on {spec.label()}{'' if loaded else ', not loaded yet'}."

    def _revert_switch(self) -> ModelSpec | None:
        """Go back to the model an endpoint replaced, after the endpoint's first reply failed."""
        if self._fallback is None:
            return None
        previous_model, previous_spec = self._fallback
        self._fallback = None
        failed, self.chat_model, self.spec = self.chat_model, previous_model, previous_spec
        self._let_go(failed)
        self._loaded_spec = previous_spec if previous_model is not None else None
        self._emit(SessionEvent("model_loaded" if previous_model is not None else "model_unloaded"))
        return previous_spec

    def unload(self, notify: bool = True) -> None:
        """Drop the loaded model and its caches, and give the memory back.

        Raises:
            InvalidInputError: a reply is being generated.
        """
        with self.exclusive("unload the model"):
            self._unload_locked(notify)

    def _unload_locked(self, notify: bool) -> None:
        if self.chat_model is None and self._fallback is None:
            return
        held = (self.chat_model, self._fallback[0] if self._fallback else None)
        self.chat_model, self._loaded_spec, self._fallback = None, None, None
        self._let_go(*held)
        _free_memory()
        if notify:
            self._emit(SessionEvent("model_unloaded"))

    # ------------------------------------------------------------------------ conversation
    def reset(self) -> None:
        """Forget the conversation (the model stays loaded).

        Raises:
            InvalidInputError: a reply is being generated.
        """
        with self.exclusive("reset the conversation"):
            self.turns.clear()
            self._drop_kv_cache()
            self._emit(SessionEvent("reset"))

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
            # The thinking goes with the answer; the backend sends it back only as the model's template expects.
            thought = {"reasoning_content": turn.reasoning} if turn.reasoning else {}
            messages += [
                HumanMessage(content=turn.user_content()),
                AIMessage(content=turn.reply, additional_kwargs=thought),
            ]
        messages.append(HumanMessage(content=Turn(user=text, images=list(images)).user_content()))
        return messages

    def stop(self) -> None:
        """Ask the reply being generated to stop; its partial text is kept, marked interrupted."""
        self._cancel.set()

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
        **overrides: Any,
    ) -> Turn:
        """Send ``text`` (after ``images``: image content blocks, ``hf_magic.images.image_block``), stream the reply
        to ``on_token`` and listeners, record and return the turn.

        ``key`` names the sender (a notebook cell): a turn with the same key is replaced in place.
        ``on_reasoning`` receives the model's thinking as it comes (also sent to listeners as "reasoning" events).
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
                return self._send_locked(text, key, spec, on_token, progress, overrides, list(images), on_reasoning)
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
    ) -> Turn:
        self._cancel.clear()
        chat_model = self._load_locked(spec or self.spec, progress)
        messages = self.build_messages(text, key, images or ())
        kwargs = {**self.settings.call_kwargs(), **{k: v for k, v in overrides.items() if v is not None}}
        turn = Turn(user=text, model=self.spec.model, system_prompt=self.settings.system_prompt, key=key)
        turn.images = list(images or [])
        self._emit(SessionEvent("turn_started", turn=turn))
        pieces: list[str] = []
        thoughts: list[str] = []
        answered = False
        start = time.perf_counter()
        try:
            for delta in self._stream(chat_model, messages, kwargs):
                if not answered:
                    answered = True
                    # The new model answered: the one it replaced can go.
                    replaced, self._fallback = self._fallback, None
                    self._let_go(replaced[0] if replaced else None)
                if delta.reasoning:
                    if turn.time_to_first_token is None:
                        turn.time_to_first_token = time.perf_counter() - start
                    thoughts.append(delta.reasoning)
                    turn.reasoning = "".join(thoughts)
                    if on_reasoning:
                        on_reasoning(delta.reasoning)
                    self._emit(SessionEvent("reasoning", turn=turn, text=delta.reasoning))
                if delta.text:
                    if turn.time_to_first_token is None:
                        turn.time_to_first_token = time.perf_counter() - start
                    pieces.append(delta.text)
                    turn.reply = "".join(pieces)
                    if on_token:
                        on_token(delta.text)
                    self._emit(SessionEvent("token", turn=turn, text=delta.text))
                if delta.usage is not None:
                    turn.usage = replace(delta.usage)  # the turn's own copy: totals add these up
                if delta.finish_reason:
                    turn.finish_reason = delta.finish_reason
                    turn.model = delta.model_name or turn.model
                if self._cancel.is_set():
                    turn.interrupted = True
                    break
        except KeyboardInterrupt:
            turn.interrupted = True
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, HfMagicError)
                else HfMagicError(f"Generation failed: {type(exc).__name__}: {exc}")
            )
            # A bad request is the caller's to fix; anything else before the first word means the new model
            # (an endpoint nobody had tried yet) does not work: go back to the one it replaced.
            if not answered and not isinstance(exc, InvalidInputError):
                previous = self._revert_switch()
                if previous is not None:
                    error = _noted(error, self._still_on(previous))
            self._emit(SessionEvent("turn_failed", turn=turn, error=str(error)))
            if error is exc:
                raise
            raise error from exc
        turn.duration = time.perf_counter() - start
        if turn.interrupted:
            turn.finish_reason = "interrupted"
        self._record(turn)
        self._emit(SessionEvent("turn_finished", turn=turn))
        return turn

    @staticmethod
    def _stream(
        chat_model: ChatHuggingFace, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> Iterator[ChatDelta]:
        stream = chat_model.stream_deltas(messages, **kwargs)
        try:
            yield from stream
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
            self._emit(SessionEvent("transcript_loaded"))


def _noted(error: HfMagicError, note: str) -> HfMagicError:
    """``error`` with ``note`` appended to its line, of the same type where that type takes a message."""
    try:
        noted = type(error)(f"{error} {note}")
    except TypeError:  # a subclass built from other arguments
        noted = HfMagicError(f"{error} {note}")
    noted.__dict__.update(error.__dict__)
    return noted


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


_SESSIONS: dict[str, ChatSession] = {}


def get_session(name: str = "default") -> ChatSession:
    """The kernel-wide session called ``name``, created on first use."""
    if name not in _SESSIONS:
        _SESSIONS[name] = ChatSession(name)
    return _SESSIONS[name]


def all_sessions() -> dict[str, ChatSession]:
    return dict(_SESSIONS)
