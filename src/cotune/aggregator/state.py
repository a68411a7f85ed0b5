"""The aggregator's persistent state: each session's stage, public results and log.

It holds only ids, hashes, public reports and ciphertext references, never plaintext.
One abstract :class:`StateStore`, a SQLite implementation (a file, or ``:memory:``), and
:func:`open_state_store` to pick one.
"""

from __future__ import annotations

import abc
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Stage(StrEnum):
    """A session's durable checkpoints, in order; ``failed`` stops the session."""

    QUEUED = "queued"
    UPLOADED = "uploaded"  # gated, trained, adapter encrypted and stored, report stored
    FINALIZED = "finalized"
    SLASHED = "slashed"  # every rejected contributor slashed (or no longer slashable)
    DONE = "done"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        """Position in the pipeline (``failed`` ranks last)."""
        return list(Stage).index(self)


@dataclass
class SessionRecord:
    """One session as the aggregator tracks it."""

    session_id: int
    stage: Stage
    created_at: float
    updated_at: float
    attempts: int = 0
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    timestamps: dict[str, float] = field(default_factory=dict)
    not_before: float = 0.0
    """The session is not retried before this time (after an error)."""
    faults: int = 0
    """Storage or chain faults in a row (they set the backoff, not the attempts)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (all public)."""
        return {
            "session_id": self.session_id,
            "stage": self.stage.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "attempts": self.attempts,
            "error": self.error,
            "timestamps": self.timestamps,
            "not_before": self.not_before,
            "faults": self.faults,
            "result": self.result,
        }


@dataclass(frozen=True)
class LogLine:
    """One line of a session's log."""

    line_id: int
    session_id: int
    at: float
    message: str


class StateStore(abc.ABC):
    """Where the aggregator keeps what survives a restart."""

    @abc.abstractmethod
    def enqueue(self, session_id: int) -> SessionRecord:
        """Track a session (idempotent): a new one starts ``queued``."""

    @abc.abstractmethod
    def get(self, session_id: int) -> SessionRecord | None:
        """A tracked session, or None."""

    @abc.abstractmethod
    def sessions(self) -> list[SessionRecord]:
        """Every tracked session, oldest first."""

    @abc.abstractmethod
    def advance(
        self, session_id: int, stage: Stage, result: dict[str, Any] | None = None
    ) -> SessionRecord:
        """Move a session to ``stage``, merging ``result`` into its results."""

    @abc.abstractmethod
    def fail(self, session_id: int, error: str) -> None:
        """Stop a session with an error (``recover`` can retry it)."""

    @abc.abstractmethod
    def note_attempt(self, session_id: int, stage_name: str) -> None:
        """Count a processing attempt and time-stamp the stage it starts."""

    @abc.abstractmethod
    def retry_later(
        self, session_id: int, error: str, not_before: float, *, infrastructure: bool
    ) -> SessionRecord:
        """Record an error and when to try again.

        An ``infrastructure`` fault (storage, the chain) gives the attempt back and counts
        one more fault in a row; any other error keeps the attempt and clears that count.
        """

    @abc.abstractmethod
    def reset_attempts(self, session_id: int) -> None:
        """Forget the attempts and faults so far (an operator's explicit recovery)."""

    @abc.abstractmethod
    def log(self, session_id: int, message: str) -> LogLine:
        """Append a line to a session's log."""

    @abc.abstractmethod
    def logs(self, session_id: int, after: int = 0) -> list[LogLine]:
        """A session's log lines with id greater than ``after``."""

    @abc.abstractmethod
    def get_value(self, key: str) -> str | None:
        """A service-wide value (the enclave id)."""

    @abc.abstractmethod
    def set_value(self, key: str, value: str) -> None:
        """Store a service-wide value."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT NOT NULL DEFAULT '{}',
    timestamps TEXT NOT NULL DEFAULT '{}',
    not_before REAL NOT NULL DEFAULT 0,
    faults INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS logs (
    line_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL,
    at REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_session ON logs (session_id, line_id);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_ADDED_COLUMNS = {"not_before": "REAL NOT NULL DEFAULT 0", "faults": "INTEGER NOT NULL DEFAULT 0"}
_COLUMNS = (
    "session_id, stage, created_at, updated_at, attempts, error, result, timestamps, "
    "not_before, faults"
)


class SqliteStateStore(StateStore):
    """State in one SQLite database (WAL; safe for the service and its HTTP API threads)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
        for column, kind in _ADDED_COLUMNS.items():  # a database made by an older release
            if column not in columns:
                self._db.execute(f"ALTER TABLE sessions ADD COLUMN {column} {kind}")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _row(self, session_id: int) -> SessionRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ?",  # noqa: S608 - constant
            (session_id,),
        ).fetchone()
        return _record(row) if row else None

    def enqueue(self, session_id: int) -> SessionRecord:
        """Track a session (idempotent): a new one starts ``queued``."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO sessions (session_id, stage, created_at, updated_at, "
                "timestamps) VALUES (?, ?, ?, ?, ?)",
                (session_id, Stage.QUEUED.value, now, now, json.dumps({"queued": now})),
            )
            record = self._row(session_id)
        assert record is not None
        return record

    def get(self, session_id: int) -> SessionRecord | None:
        """A tracked session, or None."""
        with self._lock:
            return self._row(session_id)

    def sessions(self) -> list[SessionRecord]:
        """Every tracked session, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM sessions ORDER BY session_id"  # noqa: S608 - constant
            ).fetchall()
        return [_record(r) for r in rows]

    def advance(
        self, session_id: int, stage: Stage, result: dict[str, Any] | None = None
    ) -> SessionRecord:
        """Move a session to ``stage``, merging ``result`` into its results (one transaction)."""
        now = time.time()
        with self._lock:
            record = self._row(session_id)
            if record is None:
                raise KeyError(f"session {session_id} is not tracked")
            merged = record.result | (result or {})
            stamps = record.timestamps | {stage.value: now}
            self._db.execute(
                "UPDATE sessions SET stage = ?, updated_at = ?, error = NULL, result = ?, "
                "timestamps = ?, not_before = 0, faults = 0 WHERE session_id = ?",
                (stage.value, now, json.dumps(merged), json.dumps(stamps), session_id),
            )
            updated = self._row(session_id)
        assert updated is not None
        return updated

    def fail(self, session_id: int, error: str) -> None:
        """Stop a session with an error."""
        now = time.time()
        with self._lock:
            record = self._row(session_id)
            stamps = (record.timestamps if record else {}) | {Stage.FAILED.value: now}
            self._db.execute(
                "UPDATE sessions SET stage = ?, updated_at = ?, error = ?, timestamps = ? "
                "WHERE session_id = ?",
                (Stage.FAILED.value, now, _text(error), json.dumps(stamps), session_id),
            )

    def note_attempt(self, session_id: int, stage_name: str) -> None:
        """Count a processing attempt and time-stamp the stage it starts."""
        now = time.time()
        with self._lock:
            record = self._row(session_id)
            stamps = (record.timestamps if record else {}) | {stage_name: now}
            self._db.execute(
                "UPDATE sessions SET attempts = attempts + 1, updated_at = ?, timestamps = ? "
                "WHERE session_id = ?",
                (now, json.dumps(stamps), session_id),
            )

    def retry_later(
        self, session_id: int, error: str, not_before: float, *, infrastructure: bool
    ) -> SessionRecord:
        """Record an error and when to try again (an outage gives the attempt back)."""
        with self._lock:
            if infrastructure:
                change = "attempts = MAX(0, attempts - 1), faults = faults + 1"
            else:
                change = "faults = 0"
            self._db.execute(
                f"UPDATE sessions SET {change}, error = ?, not_before = ?, updated_at = ? "  # noqa: S608
                "WHERE session_id = ?",
                (_text(error), not_before, time.time(), session_id),
            )
            record = self._row(session_id)
        if record is None:
            raise KeyError(f"session {session_id} is not tracked")
        return record

    def reset_attempts(self, session_id: int) -> None:
        """Forget the attempts and faults so far."""
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET attempts = 0, faults = 0, not_before = 0 WHERE session_id = ?",
                (session_id,),
            )

    def log(self, session_id: int, message: str) -> LogLine:
        """Append a line to a session's log (text that is not valid Unicode, escaped)."""
        message = _text(message)
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO logs (session_id, at, message) VALUES (?, ?, ?)",
                (session_id, now, message),
            )
        return LogLine(int(cursor.lastrowid or 0), session_id, now, message)

    def logs(self, session_id: int, after: int = 0) -> list[LogLine]:
        """A session's log lines with id greater than ``after``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT line_id, session_id, at, message FROM logs "
                "WHERE session_id = ? AND line_id > ? ORDER BY line_id",
                (session_id, after),
            ).fetchall()
        return [LogLine(int(r[0]), int(r[1]), float(r[2]), str(r[3])) for r in rows]

    def get_value(self, key: str) -> str | None:
        """A service-wide value."""
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_value(self, key: str, value: str) -> None:
        """Store a service-wide value."""
        with self._lock:
            self._db.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _text(text: str) -> str:
    """``text`` as SQLite stores it: UTF-8, with what is not valid Unicode escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _record(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(
        session_id=int(row[0]),
        stage=Stage(row[1]),
        created_at=float(row[2]),
        updated_at=float(row[3]),
        attempts=int(row[4]),
        error=row[5],
        result=json.loads(row[6]),
        timestamps=json.loads(row[7]),
        not_before=float(row[8]),
        faults=int(row[9]),
    )


def open_state_store(location: Path | str) -> StateStore:
    """A state store: ``:memory:`` or a SQLite file path."""
    return SqliteStateStore(location)
