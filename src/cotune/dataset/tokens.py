"""Member tokens for the dataset download server: scopes, receipts, and the store's rules.

**Scope.** Every token has a :class:`TokenScope`: ``exact`` covers one version (what a
purchase mints: buying v3 opens v3 and nothing else), ``up_to`` covers ``1..N`` (what an
owner admission, ``cotune dataset admit --max-version N``, issues).

**Receipts.** A purchase token also names its buyer and on-chain receipt id.
:meth:`TokenStore.issue_for_receipt` keeps *one* live token per receipt: a new claim
revokes the receipt's earlier token (reason ``replaced``) in the same append that adds
the new one, so a buyer who lost a token gets a new one, and never holds two. A token
the publisher revoked (:meth:`TokenStore.revoke`, :meth:`TokenStore.revoke_buyer`,
:meth:`TokenStore.revoke_receipt`; reason ``publisher``) closes its receipt for good:
:class:`ReceiptRevokedError` for every later claim.

**Storage.** The store keeps only each token's SHA-256 (the secret is returned once),
in the append-only journal of :mod:`cotune.dataset.token_journal`: ``issue`` and
``revoke`` events, shared by every process (the server minting, the CLI revoking) and
re-read on each request, so a revocation reaches a running server at its next request.
The store refuses to *issue* (:class:`TokenStoreFullError`) once the journal could no
longer take the publisher's revocation of every token they have not revoked yet
(replaced ones included), so a revocation always fits.

Errors: :class:`UnknownTokenError` (no such token), :class:`RevokedTokenError`,
:class:`ScopeError` (the version is outside the token's scope), each carrying the record;
:class:`TokenStoreFormatError` when the journal cannot be read.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from eth_utils.address import is_checksum_address

from cotune.dataset.token_journal import (
    LEGACY_TOKENS_FORMAT,
    MAX_JOURNAL_BYTES,
    MAX_LINE_BYTES,
    TOKENS_FORMAT,
    Journal,
    TokenError,
    TokenStoreFormatError,
    TokenStoreFullError,
    encode_line,
    issue_event,
    require_members,
    revoke_event,
)

MAX_LABEL_CHARS = 200
"""The longest label a token may have (so that every record fits in a journal line)."""

_MAX_UINT64 = 2**64 - 1
_HASH_HEX = re.compile(r"[0-9a-f]{64}")


class UnknownTokenError(TokenError):
    """No token with this secret was ever issued (or no token was given)."""


class RevokedTokenError(TokenError):
    """The token was issued but has been revoked; ``record`` says by whom and when."""

    def __init__(self, record: TokenRecord) -> None:
        self.record = record
        how = "revoked" if record.revocation is None else record.revocation.describe()
        super().__init__(f"token {record.label!r} was {how}")


class ScopeError(TokenError):
    """The token is valid, but not for this version (``record.scope`` says what it covers)."""

    def __init__(self, record: TokenRecord, version: int) -> None:
        self.record = record
        self.version = version
        super().__init__(f"token {record.label!r} covers {record.scope.describe()}, not v{version}")


class DuplicateLabelError(TokenError):
    """A token with this label already exists (labels identify tokens for revocation)."""


class ReceiptRevokedError(TokenError):
    """The publisher revoked a token of this purchase receipt: it gets no new token."""


class NoSuchTokenError(TokenError):
    """A revocation matched no token."""


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token's UTF-8 bytes: the only form a token is stored in."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _uint64(name: str, value: object, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_UINT64:
        raise ValueError(f"{name} must be an integer in [{low}, 2**64), got {value!r}")
    return value


class ScopeKind(StrEnum):
    """What a token's version number means."""

    EXACT = "exact"
    """Only that version (a purchase)."""
    UP_TO = "up_to"
    """Every version from 1 to that one (an owner's admission)."""


@dataclass(frozen=True)
class TokenScope:
    """The versions a token may download."""

    kind: ScopeKind
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ScopeKind):
            raise ValueError(f"scope kind must be one of {[k.value for k in ScopeKind]}")
        _uint64("the scope's version", self.version, 1)

    @classmethod
    def exact(cls, version: int) -> TokenScope:
        """Only ``version``."""
        return cls(ScopeKind.EXACT, version)

    @classmethod
    def up_to(cls, version: int) -> TokenScope:
        """Versions ``1..version``."""
        return cls(ScopeKind.UP_TO, version)

    def covers(self, version: int) -> bool:
        """Whether a token of this scope may download ``version``."""
        if self.kind is ScopeKind.EXACT:
            return version == self.version
        return 1 <= version <= self.version

    def describe(self) -> str:
        """``"v3 only"`` or ``"versions 1..3"``."""
        if self.kind is ScopeKind.EXACT or self.version == 1:
            return f"v{self.version} only"
        return f"versions 1..{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind.value, "version": self.version}

    @classmethod
    def from_dict(cls, raw: object) -> TokenScope:
        """Parse :meth:`to_dict` output; ``ValueError`` when malformed."""
        fields = require_members(raw, "a scope", {"kind", "version"})
        if fields["kind"] not in [k.value for k in ScopeKind]:
            raise ValueError(f"scope kind must be one of {[k.value for k in ScopeKind]}")
        return cls(ScopeKind(fields["kind"]), fields["version"])


class RevokedBy(StrEnum):
    """Why a token was revoked."""

    PUBLISHER = "publisher"
    """``cotune dataset revoke``: a purchase receipt revoked so gets no new token."""
    REPLACED = "replaced"
    """A newer claim against the same receipt minted its successor."""


@dataclass(frozen=True)
class Revocation:
    """When and why a token stopped working."""

    reason: RevokedBy
    at: int

    def __post_init__(self) -> None:
        if not isinstance(self.reason, RevokedBy):
            raise ValueError(f"reason must be one of {[r.value for r in RevokedBy]}")
        _uint64("at", self.at)

    def describe(self) -> str:
        """``"revoked by the publisher"`` or ``"replaced by a newer token ..."``."""
        if self.reason is RevokedBy.PUBLISHER:
            return "revoked by the publisher"
        return "replaced by a newer token for the same purchase"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"reason": self.reason.value, "at": self.at}

    def event(self, token_hash: str) -> dict[str, Any]:
        """The journal event that revokes the token ``token_hash`` so."""
        return revoke_event(token_hash, self.reason.value, self.at)


@dataclass(frozen=True)
class TokenRecord:
    """What the store knows about one token (never the secret)."""

    token_hash: str
    label: str
    scope: TokenScope
    created_at: int
    buyer: str | None = None
    """The paying address of a purchase token (checksummed); ``None`` for an admission."""
    receipt_id: int | None = None
    """The on-chain receipt a purchase token was minted against (``None`` for an admission,
    and for a purchase token migrated from the old format, which did not record it)."""
    revocation: Revocation | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.token_hash, str) or not _HASH_HEX.fullmatch(self.token_hash):
            raise ValueError(
                f"token_sha256 must be 64 lowercase hex digits, got {self.token_hash!r}"
            )
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")
        if len(self.label) > MAX_LABEL_CHARS:
            raise ValueError(f"label must be at most {MAX_LABEL_CHARS} characters")
        if not isinstance(self.scope, TokenScope):
            raise ValueError("scope must be a TokenScope")
        _uint64("created_at", self.created_at)
        if self.buyer is not None and not (
            isinstance(self.buyer, str) and is_checksum_address(self.buyer)
        ):
            raise ValueError(f"buyer must be a checksummed address, got {self.buyer!r}")
        if self.receipt_id is not None:
            _uint64("receipt_id", self.receipt_id, 1)
        if self.receipt_id is not None and self.buyer is None:
            raise ValueError("a token minted against a receipt names its buyer")

    @property
    def revoked(self) -> bool:
        """Whether the token no longer opens anything."""
        return self.revocation is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what ``cotune dataset revoke --json`` prints)."""
        return {
            "token_sha256": self.token_hash,
            "label": self.label,
            "scope": self.scope.to_dict(),
            "created_at": self.created_at,
            "buyer": self.buyer,
            "receipt_id": self.receipt_id,
            "revoked": None if self.revocation is None else self.revocation.to_dict(),
        }

    def issue_event(self) -> dict[str, Any]:
        """The journal event that issues this token."""
        return issue_event(
            self.token_hash,
            self.label,
            self.scope.to_dict(),
            self.created_at,
            self.buyer,
            self.receipt_id,
        )


_REVOCATION_BYTES = max(
    len(encode_line(Revocation(reason, _MAX_UINT64).event("0" * 64))) for reason in RevokedBy
)
"""The longest revocation line: room for one is kept per token the publisher may revoke."""


class _Tokens:
    """The journal folded: records by hash (in issue order), labels, what is revocable.

    ``revocable`` counts the tokens the publisher has not revoked (replaced ones too):
    each may still need a revocation line.
    """

    def __init__(self) -> None:
        self.records: dict[str, TokenRecord] = {}
        self.labels: set[str] = set()
        self.revocable = 0

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one ``issue`` or ``revoke`` event; ``ValueError`` when it is not valid."""
        if event["op"] == "issue":
            record = TokenRecord(
                event["token_sha256"],
                event["label"],
                TokenScope.from_dict(event["scope"]),
                event["created_at"],
                event["buyer"],
                event["receipt_id"],
            )
            if record.token_hash in self.records or record.label in self.labels:
                raise ValueError(f"token {record.label!r} is issued twice")
            self.records[record.token_hash] = record
            self.labels.add(record.label)
            self.revocable += 1
            return
        if event["reason"] not in [r.value for r in RevokedBy]:
            raise ValueError(f"reason must be one of {[r.value for r in RevokedBy]}")
        revocation = Revocation(RevokedBy(event["reason"]), event["at"])
        token_hash = event["token_sha256"]
        found = self.records.get(token_hash) if isinstance(token_hash, str) else None
        if found is None:
            raise ValueError(f"revokes a token never issued: {token_hash!r}")
        # The first revocation stands, except that the publisher's overrides "replaced".
        if found.revocation is None or (
            found.revocation.reason is RevokedBy.REPLACED
            and revocation.reason is RevokedBy.PUBLISHER
        ):
            self.records[found.token_hash] = replace(found, revocation=revocation)
            if revocation.reason is RevokedBy.PUBLISHER:
                self.revocable -= 1

    def require_new(self, label: str) -> None:
        """``DuplicateLabelError`` if a token has ``label``."""
        if label in self.labels:
            raise DuplicateLabelError(f"a token labelled {label!r} already exists")

    def reserve_for_one_more(self) -> int:
        """The bytes an issue must leave free: a revocation of each revocable token and its own."""
        return (self.revocable + 1) * _REVOCATION_BYTES


class TokenStore:
    """Hashed member tokens in one append-only journal; safe to share between threads."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_JOURNAL_BYTES) -> None:
        """Open the journal at ``path`` (created on the first write); migrate an old file.

        ``max_bytes`` caps how much of a journal the store will read, and so how many
        tokens it can issue. ``TokenStoreFormatError`` when the file is unusable.
        """
        self._journal = Journal(Path(path), _Tokens, max_bytes=max_bytes)
        with self._journal.reading():  # read (and migrate) now: a broken file fails here
            pass

    @property
    def path(self) -> Path:
        """The journal."""
        return self._journal.path

    def issue(self, label: str, scope: TokenScope) -> str:
        """Create a token of ``scope`` (an owner's admission); return its secret (shown once).

        ``DuplicateLabelError`` if ``label`` is taken; ``ValueError`` for a bad label;
        ``TokenStoreFullError`` when the journal is full.
        """
        token = secrets.token_urlsafe(32)
        record = TokenRecord(hash_token(token), label, scope, int(time.time()))
        with self._journal.writing() as tokens:
            tokens.require_new(label)
            self._journal.append([record.issue_event()], reserve=tokens.reserve_for_one_more())
        return token

    def issue_for_receipt(
        self, label: str, version: int, buyer: str, receipt_id: int
    ) -> tuple[str, list[TokenRecord]]:
        """Mint the one live token of a purchase receipt: scope exactly ``version``.

        Any earlier live token of the receipt is revoked (``replaced``) in the same append.
        Returns the secret (shown once) and the records it replaced.
        ``DuplicateLabelError`` when ``label`` is taken (the claim was already redeemed),
        ``ReceiptRevokedError`` when the publisher revoked a token of this receipt.
        """
        now = int(time.time())
        token = secrets.token_urlsafe(32)
        record = TokenRecord(
            hash_token(token), label, TokenScope.exact(version), now, buyer, receipt_id
        )
        with self._journal.writing() as tokens:
            tokens.require_new(label)
            same = [
                r
                for r in tokens.records.values()
                if r.receipt_id == receipt_id and r.buyer == buyer
            ]
            closed = [
                r for r in same if r.revocation and r.revocation.reason is RevokedBy.PUBLISHER
            ]
            if closed:
                raise ReceiptRevokedError(
                    f"the publisher revoked token {closed[0].label!r} of receipt {receipt_id}: "
                    "this purchase gets no new token"
                )
            live = [r for r in same if r.revocation is None]
            replaced = Revocation(RevokedBy.REPLACED, now)
            events = [*(replaced.event(r.token_hash) for r in live), record.issue_event()]
            after = self._journal.append(events, reserve=tokens.reserve_for_one_more())
            return token, [after.records[r.token_hash] for r in live]

    def check(self, token: str | None, version: int) -> TokenRecord:
        """Return the token's record if it may download ``version``, else raise.

        ``UnknownTokenError`` for no or an unknown token, ``RevokedTokenError``,
        ``ScopeError`` when its scope does not cover ``version``. The lookup is by the
        SHA-256 of the secret: timing can tell nothing about a secret from its hash.
        """
        with self._journal.reading() as tokens:
            found = tokens.records.get(hash_token(token)) if token else None
        if found is None:
            raise UnknownTokenError("unknown token")
        if found.revocation is not None:
            raise RevokedTokenError(found)
        if not found.scope.covers(version):
            raise ScopeError(found, version)
        return found

    def _revoke_where(self, match: Callable[[TokenRecord], bool], what: str) -> list[TokenRecord]:
        with self._journal.writing() as tokens:
            matched = [r for r in tokens.records.values() if match(r)]
            if not matched:
                raise NoSuchTokenError(f"no token {what}")
            now = Revocation(RevokedBy.PUBLISHER, int(time.time()))
            events = [
                now.event(r.token_hash)
                for r in matched
                if r.revocation is None or r.revocation.reason is not RevokedBy.PUBLISHER
            ]
            if events:
                tokens = self._journal.append(events)
            return [tokens.records[r.token_hash] for r in matched]

    def revoke(self, label_or_hash: str) -> list[TokenRecord]:
        """Revoke the token with this label (or hex SHA-256) as the publisher; its record.

        Revoking a revoked token changes nothing, except that a token ``replaced`` by a
        newer claim becomes revoked by the publisher (closing its receipt).
        ``NoSuchTokenError`` if no token matches.
        """
        lowered = label_or_hash.lower()
        return self._revoke_where(
            lambda r: r.label == label_or_hash or r.token_hash == lowered,
            f"has the label or hash {label_or_hash!r}",
        )

    def revoke_buyer(self, buyer: str) -> list[TokenRecord]:
        """Revoke every purchase token of ``buyer`` (any case): its receipts get no new token."""
        lowered = buyer.lower()
        return self._revoke_where(
            lambda r: r.buyer is not None and r.buyer.lower() == lowered,
            f"was bought by {buyer}",
        )

    def revoke_receipt(self, receipt_id: int) -> list[TokenRecord]:
        """Revoke the tokens minted against ``receipt_id``: the receipt gets no new token."""
        return self._revoke_where(
            lambda r: r.receipt_id == receipt_id, f"was minted against receipt {receipt_id}"
        )

    def list(self) -> list[TokenRecord]:
        """Every token's record (hashes only), in issue order."""
        with self._journal.reading() as tokens:
            return list(tokens.records.values())


__all__ = [
    "LEGACY_TOKENS_FORMAT",
    "MAX_JOURNAL_BYTES",
    "MAX_LABEL_CHARS",
    "MAX_LINE_BYTES",
    "TOKENS_FORMAT",
    "DuplicateLabelError",
    "NoSuchTokenError",
    "ReceiptRevokedError",
    "Revocation",
    "RevokedBy",
    "RevokedTokenError",
    "ScopeError",
    "ScopeKind",
    "TokenError",
    "TokenRecord",
    "TokenScope",
    "TokenStore",
    "TokenStoreFormatError",
    "TokenStoreFullError",
    "UnknownTokenError",
    "hash_token",
]
