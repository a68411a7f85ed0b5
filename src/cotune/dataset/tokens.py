"""Member tokens for the dataset download server, stored only as SHA-256 hashes.

A :class:`TokenStore` is one JSON file (written atomically, mode 0600) listing, per
token, the hex SHA-256 of the secret, a unique label, the highest dataset version it
may download (``max_version``), when it was issued and whether it was revoked. The
secret itself is returned once by :meth:`TokenStore.issue` and never stored.

:meth:`TokenStore.check` re-reads the file when it changed on disk, so a token
revoked by another process (the CLI, say) is refused by a running server, and
everything survives a restart. Each failure has its own error:
:class:`UnknownTokenError` (no such token), :class:`RevokedTokenError` and
:class:`ScopeError` (the version is above the token's ``max_version``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cotune.common.atomic import write_bytes_atomic
from cotune.common.errors import CotuneError

TOKENS_FORMAT = "cotune-dataset-tokens/1"
"""The ``format`` member of a token file."""

_HASH_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_UINT64 = 2**64 - 1


class TokenError(CotuneError):
    """A token was refused, or the token file cannot be used."""


class TokenStoreFormatError(TokenError):
    """The token file is not valid JSON in the expected shape."""


class UnknownTokenError(TokenError):
    """No token with this secret was ever issued (or no token was given)."""


class RevokedTokenError(TokenError):
    """The token was issued but has been revoked."""


class ScopeError(TokenError):
    """The token is valid, but not for this version (above its ``max_version``)."""


class DuplicateLabelError(TokenError):
    """A token with this label already exists (labels identify tokens for revocation)."""


class NoSuchTokenError(TokenError):
    """:meth:`TokenStore.revoke` found no token with that label or hash."""


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token's UTF-8 bytes: the only form a token is stored in."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """What the store keeps about one token (never the secret)."""

    token_hash: str
    label: str
    max_version: int
    created_at: int
    revoked: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.token_hash, str) or not _HASH_HEX.fullmatch(self.token_hash):
            raise ValueError(f"token_hash must be 64 lowercase hex digits, got {self.token_hash!r}")
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")
        for name in ("max_version", "created_at"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= _MAX_UINT64
            ):
                raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
        if self.max_version < 1:
            raise ValueError(f"max_version must be at least 1, got {self.max_version}")
        if not isinstance(self.revoked, bool):
            raise ValueError(f"revoked must be a boolean, got {self.revoked!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "token_sha256": self.token_hash,
            "label": self.label,
            "max_version": self.max_version,
            "created_at": self.created_at,
            "revoked": self.revoked,
        }

    @classmethod
    def from_dict(cls, raw: object) -> TokenRecord:
        """Parse :meth:`to_dict` output; ``ValueError`` when malformed."""
        fields = {"token_sha256", "label", "max_version", "created_at", "revoked"}
        if not isinstance(raw, dict) or set(raw) != fields:
            raise ValueError(f"a token record must have exactly the members {sorted(fields)}")
        return cls(
            token_hash=raw["token_sha256"],
            label=raw["label"],
            max_version=raw["max_version"],
            created_at=raw["created_at"],
            revoked=raw["revoked"],
        )


class TokenStore:
    """Hashed member tokens in one JSON file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        """Open the store at ``path`` (created empty on the first :meth:`issue`)."""
        self._path = Path(path)
        self._lock = threading.Lock()
        self._records: tuple[TokenRecord, ...] = ()
        self._stamp: tuple[int, int, int] | None = None
        with self._lock:
            self._refresh()

    @property
    def path(self) -> Path:
        """The token file."""
        return self._path

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            status = self._path.stat()
        except FileNotFoundError:
            return None
        return status.st_ino, status.st_mtime_ns, status.st_size

    def _refresh(self) -> None:
        """Re-read the file if it changed since it was last read (lock held)."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        if stamp is None:
            self._records, self._stamp = (), None
            return
        try:
            raw = json.loads(self._path.read_bytes())
            if not isinstance(raw, dict) or set(raw) != {"format", "tokens"}:
                raise ValueError("expected exactly the members format and tokens")
            if raw["format"] != TOKENS_FORMAT:
                raise ValueError(f"format must be {TOKENS_FORMAT!r}, got {raw['format']!r}")
            if not isinstance(raw["tokens"], list):
                raise ValueError("tokens must be a list")
            records = tuple(TokenRecord.from_dict(item) for item in raw["tokens"])
        except (OSError, ValueError) as exc:
            raise TokenStoreFormatError(f"{self._path} is not a token file: {exc}") from None
        self._records, self._stamp = records, stamp

    def _save(self, records: tuple[TokenRecord, ...]) -> None:
        document = {"format": TOKENS_FORMAT, "tokens": [r.to_dict() for r in records]}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
        write_bytes_atomic(self._path, data, mode=0o600)
        self._records, self._stamp = records, self._file_stamp()

    def issue(self, label: str, max_version: int) -> str:
        """Create a token for versions ``1..max_version``; return its secret (shown only once).

        ``DuplicateLabelError`` if ``label`` is taken; ``ValueError`` for a bad label or scope.
        """
        token = secrets.token_urlsafe(32)
        record = TokenRecord(hash_token(token), label, max_version, int(time.time()))
        with self._lock:
            self._refresh()
            if any(r.label == label for r in self._records):
                raise DuplicateLabelError(f"a token labelled {label!r} already exists")
            self._save((*self._records, record))
        return token

    def check(self, token: str | None, version: int) -> TokenRecord:
        """Return the token's record if it may download ``version``, else raise.

        ``UnknownTokenError`` for no or an unknown token, ``RevokedTokenError``,
        ``ScopeError`` when ``version`` is above the token's ``max_version``.
        """
        digest = hash_token(token) if token else None
        with self._lock:
            self._refresh()
            records = self._records
        found: TokenRecord | None = None
        for record in records:  # compare every hash, in constant time each
            if digest is not None and hmac.compare_digest(record.token_hash, digest):
                found = record
        if found is None:
            raise UnknownTokenError("unknown token")
        if found.revoked:
            raise RevokedTokenError(f"token {found.label!r} was revoked")
        if version > found.max_version:
            raise ScopeError(
                f"token {found.label!r} covers versions up to v{found.max_version}, not v{version}"
            )
        return found

    def revoke(self, label_or_hash: str) -> TokenRecord:
        """Revoke the token with this label (or hex SHA-256); return its updated record.

        Revoking an already revoked token is a no-op. ``NoSuchTokenError`` if none matches.
        """
        as_hash = label_or_hash.lower() if _HASH_HEX.fullmatch(label_or_hash.lower()) else None
        with self._lock:
            self._refresh()
            records = list(self._records)
            for i, record in enumerate(records):
                if record.label == label_or_hash or (
                    as_hash is not None and hmac.compare_digest(record.token_hash, as_hash)
                ):
                    if not record.revoked:
                        records[i] = replace(record, revoked=True)
                        self._save(tuple(records))
                    return records[i]
        raise NoSuchTokenError(f"no token has the label or hash {label_or_hash!r}")

    def list(self) -> list[TokenRecord]:
        """Every token's record (hashes only), in issue order."""
        with self._lock:
            self._refresh()
            return list(self._records)


__all__ = [
    "TOKENS_FORMAT",
    "DuplicateLabelError",
    "NoSuchTokenError",
    "RevokedTokenError",
    "ScopeError",
    "TokenError",
    "TokenRecord",
    "TokenStore",
    "TokenStoreFormatError",
    "UnknownTokenError",
    "hash_token",
]
