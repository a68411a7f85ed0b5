"""The member-token journal on disk: one append-only JSONL file, read incrementally.

This module knows bytes, lines, locks and files; what the events *mean* (records,
scopes, the receipt rule) belongs to :mod:`cotune.dataset.tokens`, whose
:class:`Fold` the :class:`Journal` feeds every event it reads.

**Format.** Line 1 is ``{"format": "cotune-dataset-tokens/2"}``, then one event per
line (built by :func:`issue_event` and :func:`revoke_event`)::

    {"op": "issue", "token_sha256", "label", "scope": {"kind", "version"},
     "created_at", "buyer", "receipt_id"}
    {"op": "revoke", "token_sha256", "reason": "publisher" | "replaced", "at"}

**Writing.** Writers (the server minting, the CLI revoking) serialise on an ``flock``
of ``<journal>.lock`` (mode 0600), taken before the journal object's thread lock, so
readers in the same process never wait behind a writer that waits for another
process. Each update is one ``O_APPEND`` write of its lines, fsynced.

**Reading.** A reader folds only the bytes appended since its last read, so a
revocation by another process reaches a running server at its next request; a
replaced file (another inode, or shorter than what was folded) is read again from the
start. A last line without its newline (a writer died mid-append) is left for the next
read, and cut off by the next writer: never fatal.

**Bounds.** A file above ``max_bytes`` or a line above :data:`MAX_LINE_BYTES` is
refused (:class:`TokenStoreFormatError`), and an append that would leave less than its
``reserve`` under the cap is refused (:class:`TokenStoreFullError`).

**The old format.** A ``cotune-dataset-tokens/1`` file (one JSON document, rewritten on
every change) is migrated in place, atomically and under the writer lock, when it is
first read: its purchase tokens (labels ``purchase:<buyer>:v<N>:...``) become ``exact``
with their buyer, every other token ``up_to``, and its revocations are kept as the
publisher's. A file that would not fold after migration is left as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from eth_utils.address import to_checksum_address

from cotune.common.atomic import fsync_directory, write_bytes_atomic
from cotune.common.errors import CotuneError

TOKENS_FORMAT = "cotune-dataset-tokens/2"
"""The ``format`` of a token journal's first line."""
LEGACY_TOKENS_FORMAT = "cotune-dataset-tokens/1"
"""The ``format`` member of the old one-document token file, migrated when read."""
MAX_LINE_BYTES = 4096
"""The longest journal line that is parsed (a record takes about 300 bytes)."""
MAX_JOURNAL_BYTES = 16 << 20
"""Default cap on the journal's size (about 50,000 tokens); larger files are refused."""

_EVENTS = {
    "issue": (
        "an issue",
        frozenset({"op", "token_sha256", "label", "scope", "created_at", "buyer", "receipt_id"}),
    ),
    "revoke": ("a revocation", frozenset({"op", "token_sha256", "reason", "at"})),
}
"""Each event's ``op``: how errors name it, and its members."""
_LEGACY_PURCHASE_LABEL = re.compile(r"purchase:(0x[0-9a-fA-F]{40}):v([0-9]{1,20}):")
_LEGACY_TOKEN_FIELDS = {"token_sha256", "label", "max_version", "created_at", "revoked"}


class TokenError(CotuneError):
    """A token was refused, or the token journal cannot be used."""


class TokenStoreFormatError(TokenError):
    """The token journal is not in the expected shape (or is above the size cap)."""


class TokenStoreFullError(TokenError):
    """The journal is too close to its size cap to take this update."""


def require_members(raw: object, what: str, fields: set[str] | frozenset[str]) -> dict[str, Any]:
    """``raw`` as a JSON object with exactly ``fields``; else ``ValueError`` naming ``what``."""
    if not isinstance(raw, dict) or set(raw) != fields:
        raise ValueError(f"{what} must have exactly the members {sorted(fields)}")
    return raw


def issue_event(
    token_hash: str,
    label: str,
    scope: Mapping[str, Any],
    created_at: int,
    buyer: str | None,
    receipt_id: int | None,
) -> dict[str, Any]:
    """The ``issue`` event of a token (its values are checked when it is folded)."""
    return {
        "op": "issue",
        "token_sha256": token_hash,
        "label": label,
        "scope": dict(scope),
        "created_at": created_at,
        "buyer": buyer,
        "receipt_id": receipt_id,
    }


def revoke_event(token_hash: str, reason: str, at: int) -> dict[str, Any]:
    """The ``revoke`` event of a token."""
    return {"op": "revoke", "token_sha256": token_hash, "reason": reason, "at": at}


def encode_line(event: Mapping[str, Any]) -> bytes:
    """One journal line: ``event`` as compact, key-sorted JSON and a newline."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode() + b"\n"


_HEADER = encode_line({"format": TOKENS_FORMAT})


class Fold(Protocol):
    """What a journal's events are folded into (the token store's records)."""

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event, whose ``op`` and members are checked; ``ValueError`` if invalid."""


_F = TypeVar("_F", bound=Fold)


@dataclass
class _Read(Generic[_F]):
    """A fold and how much of the file it has consumed."""

    fold: _F
    offset: int = 0
    lines: int = 0


def _feed(read: _Read[_F], data: bytes) -> None:
    """Fold every complete line of ``data`` (the journal from ``read.offset`` on).

    Bytes after the last newline are a line still being written, or torn by a crash:
    they are left for the next read. ``TokenStoreFormatError`` names a bad line.
    """
    end = data.rfind(b"\n") + 1
    for raw in data[:end].split(b"\n")[:-1]:
        read.lines += 1
        try:
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError(f"longer than {MAX_LINE_BYTES} bytes")
            event = json.loads(raw.decode("utf-8"))
            if read.lines == 1:
                header = require_members(event, "the first line", {"format"})
                if header["format"] != TOKENS_FORMAT:
                    raise ValueError(f"format must be {TOKENS_FORMAT!r}, got {header['format']!r}")
                continue
            op = event.get("op") if isinstance(event, dict) else None
            if not isinstance(op, str) or op not in _EVENTS:
                raise ValueError('expected an object with "op": "issue" or "revoke"')
            read.fold.apply(require_members(event, *_EVENTS[op]))
        except (ValueError, RecursionError) as exc:
            raise TokenStoreFormatError(f"line {read.lines}: {exc}") from None
    read.offset += end


def _legacy_document(data: bytes) -> dict[str, Any] | None:
    """``data`` as a ``cotune-dataset-tokens/1`` document, or ``None`` if it is not one."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("format") != LEGACY_TOKENS_FORMAT:
        return None
    return document


def _legacy_journal(document: dict[str, Any], now: int) -> bytes:
    """An old-format document as a journal; its revocations are dated ``now`` (it kept none).

    A purchase token (label ``purchase:<buyer>:v<N>:...`` with ``max_version`` N) becomes
    ``exact`` and keeps its buyer (its receipt id was never recorded); any other token
    ``up_to``. ``TokenStoreFormatError`` when the document is malformed.
    """
    try:
        fields = require_members(document, "a v1 token file", {"format", "tokens"})
        if not isinstance(fields["tokens"], list):
            raise ValueError("tokens must be a list")
        issues, revokes = [], []
        for raw in fields["tokens"]:
            item = require_members(raw, "a v1 token", _LEGACY_TOKEN_FIELDS)
            if not isinstance(item["revoked"], bool):
                raise ValueError("revoked must be a boolean")
            label, top = item["label"], item["max_version"]
            purchase = _LEGACY_PURCHASE_LABEL.match(label) if isinstance(label, str) else None
            bought = purchase is not None and int(purchase.group(2)) == top
            scope = {"kind": "exact" if bought else "up_to", "version": top}
            buyer = to_checksum_address(purchase.group(1)) if bought and purchase else None
            issues.append(
                issue_event(item["token_sha256"], label, scope, item["created_at"], buyer, None)
            )
            if item["revoked"]:
                revokes.append(revoke_event(item["token_sha256"], "publisher", now))
    except ValueError as exc:
        raise TokenStoreFormatError(f"not a valid {LEGACY_TOKENS_FORMAT} file: {exc}") from None
    return _HEADER + b"".join(encode_line(event) for event in (*issues, *revokes))


class Journal(Generic[_F]):
    """The journal at ``path``, folded into a ``new_fold()``; safe to share between threads.

    Read it inside :meth:`reading`, update it inside :meth:`writing` with :meth:`append`.
    """

    def __init__(self, path: Path, new_fold: Callable[[], _F], *, max_bytes: int) -> None:
        """The journal at ``path`` (created on the first append); nothing is read yet."""
        self._path = Path(path)
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        self._new_fold = new_fold
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._read: _Read[_F] = _Read(new_fold())
        self._stamp: tuple[int, int] | None = None

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    @contextlib.contextmanager
    def reading(self) -> Iterator[_F]:
        """The fold, up to date, under the thread lock (an old-format file is migrated)."""
        with self._lock:
            if self._refresh():
                yield self._read.fold
                return
        with self.writing() as fold:  # an old-format file: migrated under the writer lock
            yield fold

    @contextlib.contextmanager
    def writing(self) -> Iterator[_F]:
        """The fold, up to date, under the writer lock and then the thread lock."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._lock:
                if not self._refresh():
                    self._migrate()
                    if not self._refresh():
                        raise TokenStoreFormatError(f"{self._path} changed while migrated")
                yield self._read.fold
        finally:
            os.close(fd)  # releases the flock

    def append(self, events: Sequence[Mapping[str, Any]], *, reserve: int = 0) -> _F:
        """Append ``events`` in one write, fsync and fold them; the fold (inside :meth:`writing`).

        ``TokenStoreFullError`` unless ``reserve`` bytes stay free under the cap after
        them. A torn last line left by a crashed writer is cut off first (whole lines are
        never removed: other processes may have folded them).
        """
        offset = self._read.offset
        payload = b"".join(encode_line(event) for event in events)
        if offset == 0:
            payload = _HEADER + payload
        needed = offset + len(payload) + reserve
        if needed > self._max_bytes:
            raise TokenStoreFullError(
                f"{self._path} holds {offset} bytes; this update needs {needed} of the cap "
                f"of {self._max_bytes}: start a new token file"
            )
        created = not self._path.exists()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            if os.fstat(fd).st_size > offset:  # a torn line: every whole one is folded
                os.ftruncate(fd, offset)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_directory(self._path.parent)
        self._refresh()
        return self._read.fold

    def _refresh(self) -> bool:
        """Fold what was appended since the last read (thread lock held).

        ``False``, folding nothing, for an old-format file (only a writer migrates it).
        """
        try:
            status = self._path.stat()
        except FileNotFoundError:
            self._read, self._stamp = _Read(self._new_fold()), None
            return True
        except OSError as exc:
            raise TokenStoreFormatError(f"cannot read {self._path}: {exc}") from None
        if (status.st_ino, status.st_size) == self._stamp:
            return True
        try:
            with self._path.open("rb") as handle:
                status = os.fstat(handle.fileno())
                if status.st_size > self._max_bytes:
                    raise TokenStoreFormatError(
                        f"{self._path} holds {status.st_size} bytes, above the cap of "
                        f"{self._max_bytes}"
                    )
                read = self._read
                if (
                    self._stamp is None
                    or status.st_ino != self._stamp[0]
                    or status.st_size < read.offset
                ):
                    read = _Read(self._new_fold())
                handle.seek(read.offset)
                data = handle.read(self._max_bytes - read.offset)
        except FileNotFoundError:  # removed since the stat
            self._read, self._stamp = _Read(self._new_fold()), None
            return True
        except OSError as exc:
            raise TokenStoreFormatError(f"cannot read {self._path}: {exc}") from None
        if read.offset == 0 and not data.startswith(_HEADER) and _legacy_document(data):
            return False
        self._read, self._stamp = _Read(self._new_fold()), None  # a failed fold leaves nothing
        try:
            _feed(read, data)
        except TokenStoreFormatError as exc:
            raise TokenStoreFormatError(f"{self._path}: {exc}") from None
        # Stamped with what was folded: a torn tail is looked at again on the next read.
        self._read, self._stamp = read, (status.st_ino, read.offset)
        return True

    def _migrate(self) -> None:
        """Rewrite an old-format file as a journal, atomically (both locks held)."""
        try:
            with self._path.open("rb") as handle:
                data = handle.read(self._max_bytes + 1)
        except OSError as exc:
            raise TokenStoreFormatError(f"cannot read {self._path}: {exc}") from None
        document = _legacy_document(data) if len(data) <= self._max_bytes else None
        if document is None:  # another process migrated it first
            return
        journal = _legacy_journal(document, int(time.time()))
        try:
            _feed(_Read(self._new_fold()), journal)  # never replace it with a journal that fails
        except TokenStoreFormatError as exc:
            raise TokenStoreFormatError(
                f"{self._path}: cannot migrate this {LEGACY_TOKENS_FORMAT} file ({exc})"
            ) from None
        write_bytes_atomic(self._path, journal, mode=0o600)


__all__ = [
    "LEGACY_TOKENS_FORMAT",
    "MAX_JOURNAL_BYTES",
    "MAX_LINE_BYTES",
    "TOKENS_FORMAT",
    "Fold",
    "Journal",
    "TokenError",
    "TokenStoreFormatError",
    "TokenStoreFullError",
    "encode_line",
    "issue_event",
    "require_members",
    "revoke_event",
]
