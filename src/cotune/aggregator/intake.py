"""Bringing one contribution into the enclave: check, fetch, decrypt, open its envelope.

Each submission is taken in on its own, and anything its author controls that is wrong
with it rejects that contributor alone, with a reason code (:class:`Refused`): a public
key nothing can be sealed to (``unusable_key``), a ciphertext over the session's size
cap (``too_large``, seen from the store's size before a byte is fetched), a blob the
store does not hold or whose bytes do not match the commitment, that does not decrypt
under this session and contributor, or whose envelope does not parse (``unreadable``),
a dataset claim that does not hold (``provenance``). Faults of the store itself
(unreachable, timing out) raise :class:`~cotune.aggregator.faults.InfrastructureError`:
the session is retried later and nobody is blamed.

A blob whose bytes no longer match its content id was uploaded intact (the store names
blobs by their hash) and changed at rest, by the store or by anyone who can write to
it: its contributor is rejected but not slashed (``slash`` is false), and gets the stake
back once the slash window closes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cotune.aggregator.bindings import (
    commitment_salt_info,
    dataset_commitment,
    submission_info,
)
from cotune.aggregator.enclave import EnclaveKeys
from cotune.aggregator.faults import InfrastructureError, is_infrastructure_fault
from cotune.aggregator.limits import max_ciphertext_bytes
from cotune.chain.events import Submitted
from cotune.crypto.errors import CryptoError
from cotune.crypto.hpke import HpkePublicKey, usable_public_key
from cotune.dataset.provenance import DatasetClaim, ProvenanceError, unwrap_submission
from cotune.storage.base import BlobStore
from cotune.storage.errors import BlobIntegrityError, StorageError
from cotune.training.rules import GateRules, Reason


@dataclass(frozen=True)
class Opened:
    """A contribution the enclave could read: its JSONL data and what came with it."""

    submission: Submitted
    data: bytes
    claim: DatasetClaim | None
    commitment: str
    """The salted commitment to ``data`` that public reports carry instead of its hash."""
    hpke_key: HpkePublicKey

    @property
    def contributor(self) -> str:
        """Who submitted it."""
        return self.submission.contributor


@dataclass(frozen=True)
class Refused:
    """A contribution rejected before the gate, and why."""

    submission: Submitted
    reason: Reason
    error: str
    slash: bool = True
    """False when the fault may not be the contributor's (bytes changed at rest)."""

    @property
    def contributor(self) -> str:
        """Who submitted it."""
        return self.submission.contributor


class Intake:
    """Takes in the submissions of one session."""

    def __init__(
        self,
        store: BlobStore,
        keys: EnclaveKeys,
        *,
        chain_id: int,
        coordinator: str,
        session_id: int,
        rules: GateRules,
    ) -> None:
        """Take in submissions to ``session_id`` under ``rules``' size cap."""
        self.store = store
        self.keys = keys
        self.chain_id = chain_id
        self.coordinator = coordinator
        self.session_id = session_id
        self.max_blob_bytes = max_ciphertext_bytes(rules.max_contribution_bytes)

    def take(self, submission: Submitted) -> Opened | Refused:
        """Open one submission, or say why its contributor is rejected.

        Raises ``InfrastructureError`` when the store fails; ``MemoryError`` propagates
        (the caps keep every contribution far below what the machine holds).
        """
        try:
            return self._open(submission)
        except _RefusedError as refusal:
            return Refused(submission, refusal.reason, refusal.error, refusal.slash)
        except (InfrastructureError, MemoryError):
            raise
        except Exception as exc:  # anything else these bytes did to us is their author's
            if is_infrastructure_fault(exc):
                raise InfrastructureError(f"{type(exc).__name__}: {exc}") from exc
            return Refused(submission, Reason.UNREADABLE, f"{type(exc).__name__}: {exc}")

    def _open(self, submission: Submitted) -> Opened:
        who = submission.contributor
        try:
            key = usable_public_key(submission.hpke_public_key)
        except ValueError as exc:
            why = f"the committed HPKE public key: {exc}"
            raise _RefusedError(Reason.UNUSABLE_KEY, why) from None
        cid = submission.ciphertext_hash.hex()
        ref = _storage(lambda: self.store.stat(cid))
        if ref.size > self.max_blob_bytes:
            raise _RefusedError(
                Reason.TOO_LARGE,
                f"the ciphertext is {ref.size:,} bytes, over the cap of {self.max_blob_bytes:,}",
            )
        blob = _storage(lambda: self.store.get_bytes(ref))
        info = submission_info(self.chain_id, self.coordinator, self.session_id, who)
        try:
            plaintext = self.keys.decrypt(blob, info)
        except CryptoError as exc:
            raise _RefusedError(Reason.UNREADABLE, f"{type(exc).__name__}: {exc}") from None
        del blob
        try:
            opened = unwrap_submission(plaintext)
            for claim in opened.claims:
                claim.check(opened.data)
        except ProvenanceError as exc:
            raise _RefusedError(Reason.PROVENANCE, str(exc)) from None
        salt = opened.salt or self.keys.derive_salt(
            commitment_salt_info(self.chain_id, self.coordinator, self.session_id, who)
        )
        return Opened(
            submission,
            opened.data,
            opened.claims[0] if opened.claims else None,
            dataset_commitment(salt, opened.data),
            key,
        )


class _RefusedError(Exception):
    """Internal: the contribution is rejected for ``reason`` (and slashed, or not)."""

    def __init__(self, reason: Reason, error: str, *, slash: bool = True) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.slash = slash


T = TypeVar("T")


def _storage(operation: Callable[[], T]) -> T:
    """Run a store operation: absent or corrupt blobs are the uploader's fault, outages not."""
    try:
        return operation()
    except OSError as exc:  # the store's own disk or socket failing under it
        raise InfrastructureError(f"storage: {type(exc).__name__}: {exc}") from exc
    except StorageError as exc:
        if is_infrastructure_fault(exc):
            raise InfrastructureError(f"storage: {type(exc).__name__}: {exc}") from exc
        slash = not isinstance(exc, BlobIntegrityError)  # changed at rest: maybe not theirs
        raise _RefusedError(
            Reason.UNREADABLE, f"{type(exc).__name__}: {exc}", slash=slash
        ) from None
