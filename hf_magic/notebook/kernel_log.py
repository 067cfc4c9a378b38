"""This kernel's turn log: it follows the kernel-wide sessions and writes each turn to ``logs.db`` as it ends
(finished, stopped, interrupted or failed), and rebuilds a session from a logged conversation.

It hears turns through session events only. A conversation runs from a session's start, ``reset`` or restore to
the next one; the turns a restore or load brings in are written again at its start (marked as carried), so a
crash after it loses nothing either. A fault is one line, said once: the turns it kept out wait in memory and go
with the next write that succeeds.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

from .. import config
from ..errors import HfMagicError, InvalidInputError, TurnLogError
from .model_spec import ModelSpec
from .session import ChatSession, on_session_created
from .turn_log import BUSY_TIMEOUT_S, TurnLog
from .turn_records import LoggedTurn, event_values, row_values, transcript_of
from .turns import SessionEvent, Settings, Turn

MAX_HELD = 1000
"""Turns kept in memory while the log cannot be written; the oldest go first past this."""
RETRY_WAIT_S = 0.2
"""How long a write waits for a lock while turns are held after a fault: the first wait was the full
``turn_log.BUSY_TIMEOUT_S``; a lock that stays taken must not cost every later reply as much."""


@dataclass
class _Following:
    """What the log knows of one session between events."""

    conversation: str
    stop_asked: bool = False
    spec: dict[str, Any] | None = None
    """The model the reply in flight was sent to (a failed first reply of an endpoint puts the session back on the
    model before it, before the failure is heard)."""


class KernelLog:
    """The turn log of this process, shared by every session it follows (``kernel_log()`` is the one instance).

    ``switched_on`` is what ``%hfchat log on|off`` and ``%config HfChatMagics.log`` set; ``HF_MAGIC_NO_LOG=1``
    overrides it. ``notify`` says a fault in one line (default: to stderr, which a notebook shows under the cell).
    """

    def __init__(self) -> None:
        self.kernel = uuid.uuid4().hex[:12]
        self.switched_on = True
        self.notebook_finder: Callable[[], Path | None] = _no_notebook
        self.notify: Callable[[str], None] = _to_stderr
        self._followed: weakref.WeakKeyDictionary[ChatSession, _Following] = weakref.WeakKeyDictionary()
        self._store: TurnLog | None = None
        self._held: list[dict[str, Any]] = []
        self._reported: str | None = None
        self._origins: dict[int, LoggedTurn] = {}
        self._lock = threading.RLock()

    @property
    def enabled(self) -> bool:
        return self.switched_on and not config.log_disabled()

    def store(self) -> TurnLog:
        """The log file at ``config.log_path()`` now (a changed ``HF_MAGIC_HOME`` opens the new one)."""
        with self._lock:
            path = config.log_path()
            if self._store is None or self._store.path != path:
                if self._store is not None:
                    self._store.close()
                self._store = TurnLog(path)
            return self._store

    # ------------------------------------------------------------------------- following
    def follow(self, session: ChatSession) -> None:
        """Log the turns of ``session`` from now on (once, however often it is called)."""
        with self._lock:
            if session in self._followed:
                return
            state = self._followed[session] = _Following(_new_id())
        session.subscribe(partial(self._hear, weakref.ref(session), state))
        if session.turns:  # a session that chatted before the log followed it: its turns open the conversation
            try:
                self._carry(session, state)
            except Exception as exc:  # following is done at get_session: the log must never break it
                self.notify(f"hf_magic: the turn log could not record {session.name!r}'s earlier turns: {exc}")

    def _hear(self, session_ref: weakref.ref[ChatSession], state: _Following, event: SessionEvent) -> None:
        session = session_ref()
        if session is None:
            return
        kind, turn = event.kind, event.turn
        if kind == "turn_started":
            state.stop_asked, state.spec = False, asdict(session.spec)
        elif kind == "stop_requested":
            state.stop_asked = True
        elif kind in ("turn_finished", "turn_failed") and turn is not None:
            ended = "error" if kind == "turn_failed" else _ending(turn, state.stop_asked)
            self._write(session, [self._row(session, state, turn, ended, error=event.error, spec=state.spec)])
            state.spec = None
        elif kind == "reset":
            state.conversation = _new_id()
        elif kind == "transcript_loaded":
            state.conversation = _new_id()
            self._carry(session, state)
        elif isinstance(getattr(event, "detail", None), dict):  # a capability's record ("map_finished"...)
            self._write(session, [self._event_row(session, state, event)])

    def _carry(self, session: ChatSession, state: _Following) -> None:
        rows = []
        for turn in session.turns:
            origin = self._origins.get(id(turn))
            ended = origin.ended if origin is not None else _ending(turn, False)
            root = None if origin is None else (origin.origin or origin.id)
            rows.append(self._row(session, state, turn, ended, carried=True, origin=root))
        self._write(session, rows)

    def _row(
        self,
        session: ChatSession,
        state: _Following,
        turn: Turn,
        ended: str,
        spec: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        return row_values(
            turn,
            conversation=state.conversation,
            session=session.name,
            kernel=self.kernel,
            ended=ended,
            logged_at=time.time(),
            notebook=self._notebook(),
            spec=spec or asdict(session.spec),
            settings=asdict(session.settings),
            secrets=_secrets(session),
            **extra,
        )

    def _event_row(self, session: ChatSession, state: _Following, event: SessionEvent) -> dict[str, Any]:
        detail: dict[str, Any] = getattr(event, "detail", None) or {}
        return event_values(
            event.kind,
            event.text,
            detail,
            conversation=state.conversation,
            session=session.name,
            kernel=self.kernel,
            logged_at=time.time(),
            notebook=self._notebook(),
            secrets=_secrets(session),
        )

    def _notebook(self) -> str | None:
        try:
            found = self.notebook_finder()
        except Exception:  # where the notebook is is a nicety: never a reason to lose a turn
            return None
        return str(found) if found else None

    # --------------------------------------------------------------------------- writing
    def _write(self, session: ChatSession, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        with self._lock:
            line = self._write_locked(rows)
        if line:  # said outside the lock: a panel hearing it takes its own
            self.notify(f"hf_magic: {line}")
            session.emit(SessionEvent("notice", text=line))  # a panel shows it in its note line

    def _write_locked(self, rows: list[dict[str, Any]]) -> str | None:
        """Write the held rows and ``rows``; the line to say, if any: a new fault (one line per fault, not one per
        turn), or that the log works again."""
        batch = [*self._held, *rows]
        store = self.store()
        store.timeout = RETRY_WAIT_S if self._held else BUSY_TIMEOUT_S
        try:
            store.write(batch)
        except TurnLogError as exc:
            self._held = batch[-MAX_HELD:]
            if str(exc) == self._reported:
                return None
            self._reported = str(exc)
            return f"{exc} Chat goes on; {len(self._held)} turn(s) wait in memory until the log can be written."
        written_late, self._held = len(batch) - len(rows), []
        if self._reported is None:
            return None
        self._reported = None
        late = f": {written_late} turn(s) held in memory are in it now" if written_late else ""
        return f"The turn log {store.path} works again{late}."

    # ------------------------------------------------------------------------- restoring
    def restore(self, session: ChatSession, entries: list[LoggedTurn]) -> list[Turn]:
        """Put the conversation ``entries`` (one conversation's rows, in order) into ``session``: its turns as the
        session held them, its system prompt and settings, and its model when none is loaded yet. The turns are
        logged again at the start of the session's new conversation, pointing at their rows.

        Raises:
            InvalidInputError: no finished turn in ``entries``, or a reply is being generated in ``session``.
        """
        turns = transcript_of(entries)
        if not turns:
            raise InvalidInputError("That conversation has no finished turn to restore (only failed ones).")
        last = next(entry for entry in reversed(entries) if entry.ended != "error")
        # Not under the log's lock: restore_turns may wait for the session, whose other thread may be writing a turn.
        origins = {id(entry.turn): entry for entry in entries}
        self._origins.update(origins)
        try:
            session.restore_turns(turns, action="restore a logged conversation")
        finally:
            for key in origins:
                self._origins.pop(key, None)
        session.settings = replace(session.settings, **_known(Settings, last.settings))
        if not session.loaded and last.spec:
            try:
                session.spec = ModelSpec(**_known(ModelSpec, last.spec))
            except HfMagicError:  # a spec this hf_magic no longer accepts: keep the session's own
                pass
        return turns


def _ending(turn: Turn, stop_asked: bool) -> str:
    if not turn.interrupted:
        return "finished"
    return "stopped" if stop_asked else "interrupted"


def _known(kind: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    return {name: value for name, value in values.items() if name in names}


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _no_notebook() -> Path | None:
    from .restore import running_notebook

    return running_notebook({})


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _secrets(session: ChatSession) -> Iterable[str]:
    """Every access token this process could know: the environment's, ``hf auth login``'s, and the one the
    session's endpoint was given. The log blanks them wherever they show up."""
    found = list(config.env_tokens())
    try:
        from huggingface_hub import get_token

        found.append(get_token() or "")
    except Exception:  # an unreadable token file: the environment's tokens are still blanked
        pass
    token = getattr(getattr(session.chat_model, "llm", None), "huggingfacehub_api_token", None)
    if token is not None and hasattr(token, "get_secret_value"):
        found.append(token.get_secret_value())
    return [secret for secret in found if secret]


_LOG: KernelLog | None = None
_LOG_LOCK = threading.Lock()


def kernel_log() -> KernelLog:
    """This process's turn log (created on first use)."""
    global _LOG
    with _LOG_LOCK:
        if _LOG is None:
            _LOG = KernelLog()
        return _LOG


def watch_kernel_sessions(user_ns: Mapping[str, Any] | None = None) -> KernelLog:
    """Log every kernel-wide session, those there are and those to come; ``user_ns`` (the shell's) lets the log
    name the notebook VS Code runs."""
    log = kernel_log()
    if user_ns is not None:
        from .restore import running_notebook

        log.notebook_finder = partial(running_notebook, user_ns)
    on_session_created(log.follow)
    return log
