"""The public documents a session commits to by hash: its training spec and its gate rules.

Both are stored as canonical JSON in content-addressed storage, so the content id *is*
the hash committed on chain (``modelRef`` and ``gateRulesHash``): the aggregator fetches
them by that hash and the store verifies the bytes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from cotune.common import jsonsafe
from cotune.common.errors import CotuneError
from cotune.storage.base import BlobStore
from cotune.training.config import TINY_MODEL_ID, LoraHyperparams
from cotune.training.rules import GateRules

MAX_DOCUMENT_BYTES = 1 << 20
"""A committed spec or rules document larger than this is refused unread."""


class SpecError(CotuneError):
    """A committed document is missing from storage or malformed."""


def canonical(document: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace: the bytes that are hashed."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SessionSpec:
    """What the joint training runs: base model, hyperparameters, balancing."""

    base_model: str = TINY_MODEL_ID
    hyperparams: LoraHyperparams = field(default_factory=LoraHyperparams)
    balance: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {
            "base_model": self.base_model,
            "hyperparams": self.hyperparams.to_dict(),
            "balance": self.balance,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SessionSpec:
        """Parse, refusing unknown keys."""
        unknown = sorted(set(raw) - {"base_model", "hyperparams", "balance"})
        if unknown:
            raise ValueError(f"unknown session spec fields: {', '.join(unknown)}")
        base_model = raw.get("base_model", TINY_MODEL_ID)
        hyperparams = raw.get("hyperparams", {})
        balance = raw.get("balance", True)
        if not isinstance(base_model, str) or not base_model:
            raise ValueError(f"base_model must be a non-empty string, got {base_model!r}")
        if not isinstance(hyperparams, dict):
            raise ValueError(f"hyperparams must be an object, got {hyperparams!r}")
        if not isinstance(balance, bool):
            raise ValueError(f"balance must be true or false, got {balance!r}")
        try:
            parsed = LoraHyperparams.from_dict(hyperparams)
        except TypeError as exc:  # a wrongly typed value inside the hyperparameters
            raise ValueError(f"hyperparams are invalid: {exc}") from exc
        return cls(base_model, parsed, balance)


def publish(store: BlobStore, document: dict[str, Any]) -> bytes:
    """Store a document canonically; returns its 32-byte hash (= content id)."""
    return store.put(io.BytesIO(canonical(document))).digest


def fetch_document(store: BlobStore, digest: bytes, what: str) -> dict[str, Any]:
    """Fetch and parse a committed document; ``SpecError`` when missing, too large or malformed.

    The error's ``__cause__`` is the storage error when the store failed (so a caller can
    tell an outage from a bad document).
    """
    try:
        ref = store.stat(digest.hex())
        if ref.size > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{ref.size:,} bytes, over the cap of {MAX_DOCUMENT_BYTES:,}")
        raw = store.get_bytes(ref)
        document = jsonsafe.loads(raw)
    except Exception as exc:
        raise SpecError(f"the session's {what} (0x{digest.hex()}) cannot be read: {exc}") from exc
    if not isinstance(document, dict) or canonical(document) != raw:
        raise SpecError(f"the session's {what} (0x{digest.hex()}) is not canonical JSON")
    return document


def fetch_spec(store: BlobStore, digest: bytes) -> SessionSpec:
    """The session spec committed as ``modelRef``."""
    try:
        return SessionSpec.from_dict(fetch_document(store, digest, "training spec"))
    except ValueError as exc:
        raise SpecError(f"the session's training spec is invalid: {exc}") from exc


def fetch_rules(store: BlobStore, digest: bytes) -> GateRules:
    """The gate rules committed as ``gateRulesHash`` (their canonical hash is checked too)."""
    try:
        rules = GateRules.from_dict(fetch_document(store, digest, "gate rules"))
    except ValueError as exc:
        raise SpecError(f"the session's gate rules are invalid: {exc}") from exc
    if rules.hash() != digest:
        raise SpecError("the stored gate rules do not hash to the session's gateRulesHash")
    return rules


def publish_rules(store: BlobStore, rules: GateRules) -> bytes:
    """Store gate rules; their content id equals ``rules.hash()``."""
    return store.put(io.BytesIO(rules.canonical_json().encode())).digest
