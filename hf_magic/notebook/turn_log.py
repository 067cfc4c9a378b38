"""The turn log's SQLite file (``$HF_MAGIC_HOME/logs.db``): its schema and migrations, writing rows, reading them
back, full-text search (FTS5) and forgetting.

WAL mode lets several kernels write at once and read while another writes; each write is one ``BEGIN IMMEDIATE``
transaction, so a turn is in the file whole or not at all, and a process killed mid-write loses only that turn.
Every fault (locked, read-only, corrupt, full, written by a newer hf_magic) is one ``TurnLogError`` line.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..errors import TurnLogError
from .turn_records import LoggedTurn, logged_turn

SCHEMA_VERSION = 1
"""What ``PRAGMA user_version`` holds once this hf_magic's migrations ran; a file above it is not written."""

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another kernel's write. Each takes milliseconds, but on a busy machine a writer can be
held up in fsync or descheduled for a second or more; a lock held past this is another program's."""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation TEXT NOT NULL,      -- one per session from its start, a reset or a restore to the next
            logged_at REAL NOT NULL,         -- Unix time the row was written
            session TEXT NOT NULL,
            kernel TEXT NOT NULL,            -- which kernel process wrote it
            notebook TEXT,
            cell TEXT,                       -- the turn's key: a notebook cell id, or a hash of the cell's text
            ended TEXT NOT NULL,             -- finished, stopped, interrupted or error
            origin INTEGER,                  -- the row a restored turn was copied from
            carried INTEGER NOT NULL DEFAULT 0,  -- 1: came in with a restore or load, not sent here
            model TEXT NOT NULL DEFAULT '',
            backend TEXT,
            user TEXT NOT NULL,
            reply TEXT NOT NULL,
            reasoning TEXT NOT NULL,
            tools TEXT NOT NULL,             -- tool calls and results as text, for search
            error TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            duration REAL,
            record TEXT NOT NULL             -- JSON: the rest of the Turn, the model spec and the settings
        )""",
        "CREATE INDEX turns_by_conversation ON turns(conversation, id)",
        "CREATE INDEX turns_by_session ON turns(session, id)",
        # The index only: the text stays in `turns` (external content), kept in step by the two triggers.
        """CREATE VIRTUAL TABLE turns_fts USING fts5(
            user, reply, reasoning, tools, content='turns', content_rowid='id', tokenize='unicode61'
        )""",
        """CREATE TRIGGER turns_indexed AFTER INSERT ON turns BEGIN
            INSERT INTO turns_fts(rowid, user, reply, reasoning, tools)
            VALUES (new.id, new.user, new.reply, new.reasoning, new.tools);
        END""",
        """CREATE TRIGGER turns_unindexed AFTER DELETE ON turns BEGIN
            INSERT INTO turns_fts(turns_fts, rowid, user, reply, reasoning, tools)
            VALUES ('delete', old.id, old.user, old.reply, old.reasoning, old.tools);
        END""",
        # What capabilities report beside turns (a prompt over a table: "map_finished"), as they report it.
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation TEXT NOT NULL,
            logged_at REAL NOT NULL,
            session TEXT NOT NULL,
            kernel TEXT NOT NULL,
            notebook TEXT,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            detail TEXT NOT NULL             -- JSON, as the capability's event carried it
        )""",
    ),
}
"""Version -> the statements that bring a file from the version before to it; run in order, in one transaction."""

_COLUMNS = (
    "conversation", "logged_at", "session", "kernel", "notebook", "cell", "ended", "origin", "carried", "model",
    "backend", "user", "reply", "reasoning", "tools", "error", "input_tokens", "output_tokens", "duration", "record",
)  # fmt: skip
_EVENT_COLUMNS = ("conversation", "logged_at", "session", "kernel", "notebook", "kind", "text", "detail")
_TABLES = {"turns": _COLUMNS, "events": _EVENT_COLUMNS}
_INSERTS = {
    table: f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    for table, columns in _TABLES.items()
}
_SHOWN = "origin IS NULL"
"""Listings and search show each exchange once: a turn copied in by a restore is its original's row again."""


@dataclass(frozen=True)
class LoggedEvent:
    """A capability's event as logged (its ``kind``, ``text`` and ``detail``), and where it happened."""

    id: int
    logged_at: float
    session: str
    kind: str
    text: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class ConversationSummary:
    """A past conversation as a picker lists it."""

    id: str
    session: str
    notebook: str | None
    started_at: float
    ended_at: float
    turns: int
    first_message: str


class TurnLog:
    """The log file at ``path`` (default ``config.log_path()``), opened on first use, shared by threads.

    Example:
        >>> log = TurnLog()
        >>> [entry.turn.user for entry in log.search("Paris")]
    """

    def __init__(self, path: str | Path | None = None, timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path) if path is not None else config.log_path()
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # --------------------------------------------------------------------------- writing
    def write(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` (``turn_records.row_values``, or ``event_values`` whose ``"table"`` is ``"events"``) in
        one transaction; their ids, in order.

        Raises:
            TurnLogError: the file cannot be written (the message says why and what to do); nothing was written.
        """
        with self._lock, self._faults():
            connection = self._open()
            connection.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")  # ``timeout`` may have changed
            connection.execute("BEGIN IMMEDIATE")
            try:
                ids = []
                for row in rows:
                    table = row.get("table", "turns")
                    values = [row[name] for name in _TABLES[table]]
                    ids.append(int(connection.execute(_INSERTS[table], values).lastrowid or 0))
                connection.execute("COMMIT")
            except BaseException:
                _roll_back(connection)
                raise
            return ids

    def forget(self, *, ids: Iterable[int] = (), session: str | None = None, everything: bool = False) -> int:
        """Delete the turns ``ids`` (and the copies restores made of them), every turn and event of ``session``, or
        all; the number of turns deleted. Deleted text is overwritten in the file (``secure_delete``) and the WAL is
        emptied.

        Raises:
            TurnLogError: the file cannot be written.
        """
        with self._lock, self._faults():
            if self._connection is None and not self.path.exists():
                return 0
            connection = self._open()
            connection.execute("BEGIN IMMEDIATE")
            try:
                if everything:
                    connection.execute("DELETE FROM events")
                    cursor = connection.execute("DELETE FROM turns")
                elif session is not None:
                    connection.execute("DELETE FROM events WHERE session = ?", (session,))
                    cursor = connection.execute("DELETE FROM turns WHERE session = ?", (session,))
                else:
                    wanted = [int(i) for i in ids]
                    marks = ", ".join("?" for _ in wanted)
                    query = f"DELETE FROM turns WHERE id IN ({marks}) OR origin IN ({marks})"
                    cursor = connection.execute(query, wanted + wanted)
                # Merging the index into one segment drops the deleted words from it, not just marks them.
                connection.execute("INSERT INTO turns_fts(turns_fts) VALUES ('optimize')")
                connection.execute("COMMIT")
            except BaseException:
                _roll_back(connection)
                raise
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return int(cursor.rowcount)

    # --------------------------------------------------------------------------- reading
    def recent(self, limit: int = 20, session: str | None = None) -> list[LoggedTurn]:
        """The last ``limit`` turns (of ``session``), oldest first."""
        where, args = (f"WHERE {_SHOWN} AND session = ?", [session]) if session else (f"WHERE {_SHOWN}", [])
        rows = self._query(f"SELECT * FROM turns {where} ORDER BY id DESC LIMIT ?", [*args, limit])
        return [logged_turn(row) for row in reversed(rows)]

    def recent_events(self, limit: int = 20) -> list[LoggedEvent]:
        """The last ``limit`` capability events (a prompt over a table...), oldest first."""
        rows = self._query("SELECT * FROM events ORDER BY id DESC LIMIT ?", [limit])
        return [
            LoggedEvent(
                row["id"], row["logged_at"], row["session"], row["kind"], row["text"], json.loads(row["detail"])
            )
            for row in reversed(rows)
        ]

    def search(self, text: str, limit: int = 20) -> list[LoggedTurn]:
        """The turns whose message, reply, thinking or tool calls hold every word of ``text``, newest first."""
        words = [word for word in text.split() if word]
        if not words:
            return []
        # Each word quoted: FTS5 query syntax (AND, NEAR, "*", column:) in what a user types is taken literally.
        query = " ".join('"' + word.replace('"', '""') + '"' for word in words)
        rows = self._query(
            f"SELECT turns.* FROM turns_fts JOIN turns ON turns.id = turns_fts.rowid "
            f"WHERE turns_fts MATCH ? AND {_SHOWN} ORDER BY turns.id DESC LIMIT ?",
            [query, limit],
        )
        return [logged_turn(row) for row in rows]

    def entry(self, turn_id: int) -> LoggedTurn | None:
        rows = self._query("SELECT * FROM turns WHERE id = ?", [turn_id])
        return logged_turn(rows[0]) if rows else None

    def conversation(self, conversation: str, through: int | None = None) -> list[LoggedTurn]:
        """The rows of ``conversation`` in order, up to and including row ``through`` when given."""
        limit = through if through is not None else -1
        rows = self._query(
            "SELECT * FROM turns WHERE conversation = ? AND (? < 0 OR id <= ?) ORDER BY id",
            [conversation, limit, limit],
        )
        return [logged_turn(row) for row in rows]

    def last_conversation(self, session: str) -> str | None:
        """The conversation of ``session`` that logged a turn last (in any kernel)."""
        rows = self._query("SELECT conversation FROM turns WHERE session = ? ORDER BY id DESC LIMIT 1", [session])
        return str(rows[0]["conversation"]) if rows else None

    def conversations(self, limit: int = 30) -> list[ConversationSummary]:
        """The most recent conversations, newest first (each once, with its first message)."""
        rows = self._query(
            "SELECT conversation, session, notebook, MIN(logged_at) AS started, MAX(logged_at) AS ended, "
            "COUNT(*) AS turns, MAX(id) AS last, (SELECT user FROM turns AS first WHERE first.conversation = "
            "turns.conversation ORDER BY id LIMIT 1) AS first_message FROM turns WHERE ended != 'error' "
            "GROUP BY conversation ORDER BY last DESC LIMIT ?",
            [limit],
        )
        names = ("conversation", "session", "notebook", "started", "ended", "turns", "first_message")
        return [ConversationSummary(*(row[name] for name in names)) for row in rows]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM turns", [])[0]["n"])

    def _query(self, sql: str, args: Sequence[Any]) -> list[sqlite3.Row]:
        with self._lock, self._faults():
            if self._connection is None and not self.path.exists():
                return []  # reading never creates the file (the log may be off)
            return list(self._open().execute(sql, list(args)).fetchall())

    # ------------------------------------------------------------------------ the file
    def _open(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level=None): transactions are the explicit BEGIN IMMEDIATE ... COMMIT above, so a
        # writer takes the lock before it reads and never fails to upgrade a read lock with SQLITE_BUSY.
        connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit is on disk before the reply is shown, so even a power cut keeps a finished turn.
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA secure_delete=ON")  # forgotten text is overwritten, not left in free pages
            _migrate(connection, self.path)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    @contextmanager
    def _faults(self) -> Iterator[None]:
        """sqlite3 and file-system errors as one ``TurnLogError`` line; a connection that failed is dropped, so
        the next call opens the file afresh (it may have been replaced, unlocked or made writable meanwhile)."""
        try:
            yield
        except TurnLogError:
            raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise fault(exc, self.path) from exc


def fault(error: BaseException, path: Path) -> TurnLogError:
    """The one line that says what is wrong with the log file and what to do."""
    name = str(getattr(error, "sqlite_errorname", "") or "")
    text = str(error).lower()
    where = str(path)
    if name.startswith("SQLITE_BUSY") or "locked" in text:
        return TurnLogError(f"The turn log {where} is locked by another program: close what holds it.")
    if name.startswith("SQLITE_FULL") or "disk is full" in text or getattr(error, "errno", None) == 28:
        return TurnLogError(f"The disk holding the turn log {where} is full: free some space.")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or isinstance(error, PermissionError):
        return TurnLogError(
            f"The turn log {where} cannot be written (read-only or not allowed): make it writable, or set "
            "HF_MAGIC_HOME to a folder you can write."
        )
    if "readonly" in text or "unable to open" in text:
        return TurnLogError(
            f"The turn log {where} cannot be written (read-only or not allowed): make it writable, or set "
            "HF_MAGIC_HOME to a folder you can write."
        )
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text or "malformed" in text:
        return TurnLogError(
            f"The turn log {where} is damaged ({error}): move it away (e.g. rename it to logs.db.bad) and a new log "
            "starts; the damaged file is left as it is."
        )
    return TurnLogError(f"The turn log {where} cannot be used ({type(error).__name__}: {error}).")


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring the file to ``SCHEMA_VERSION``; refuse a file from a newer hf_magic. Two kernels opening a new file
    at once take turns: the version is read again under the write lock."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise newer_schema(path, version)
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise newer_schema(path, version)
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        _roll_back(connection)
        raise


def _roll_back(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
        connection.execute("ROLLBACK")


def newer_schema(path: Path, version: int) -> TurnLogError:
    return TurnLogError(
        f"The turn log {path} was written by a newer hf_magic (log format {version}; this one knows up to "
        f"{SCHEMA_VERSION}): upgrade hf_magic (pip install -U hf_magic), or set HF_MAGIC_HOME to another folder."
    )
