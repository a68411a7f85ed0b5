"""Checking an enclave's attestation before trusting it with data.

One interface, :class:`AttestationVerifier`, for every kind of evidence. Contributors
run it (in the SDK) before encrypting, against the enclave record on chain; the
on-chain registry ran the matching ``IAttestationVerifier`` contract when the enclave
registered.

Implemented: ``dev``, an EIP-712 statement {signer, HPKE key hash, measurement, expiry,
nonce} signed by the dev-authority key that the ``DevAttestationVerifier`` contract names.
**It gives no hardware guarantee**: it proves only that the dev authority vouched for the
keys.

For a real TEE, a verifier checks a hardware quote instead:

- Intel TDX: a TD quote (ECDSA, Intel PCS collateral) whose ``REPORTDATA`` holds
  SHA-256(signer || HPKE public key) and whose ``MRTD``/``RTMR`` values map to the
  measurement;
- AMD SEV-SNP: an attestation report signed by the VCEK (chained to AMD's ARK/ASK),
  with ``REPORT_DATA`` binding the same two keys and ``MEASUREMENT`` the launch digest.

Such a verifier subclasses :class:`AttestationVerifier` here and deploys an
``IAttestationVerifier`` contract that the registry admin approves; nothing else changes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from eth_utils.address import to_checksum_address

from cotune.chain.clients.registry import DevVerifierClient, EnclaveRecord, EnclaveRegistryClient
from cotune.chain.statements import DevEvidence, recover_enclave_statement
from cotune.common.errors import CotuneError
from cotune.crypto.hpke import HpkePublicKey


class AttestationError(CotuneError):
    """The enclave's attestation does not hold; nothing must be encrypted to it."""


class RevokedKeysError(AttestationError):
    """The registry revoked these enclave keys: they can never register or serve again."""


@dataclass(frozen=True)
class VerifiedEnclave:
    """An enclave whose attestation checked out."""

    record: EnclaveRecord
    kind: str
    hardware_guarantee: bool
    hpke_public_key: HpkePublicKey

    @property
    def warning(self) -> str | None:
        """What a user must be told about this kind of attestation (None for hardware)."""
        if self.hardware_guarantee:
            return None
        return "dev attestation: signed by a local dev key, no hardware guarantee"


class AttestationVerifier(abc.ABC):
    """Checks one kind of enclave evidence."""

    kind: str
    hardware_guarantee: bool

    @abc.abstractmethod
    def verify(self, record: EnclaveRecord) -> None:
        """Raise ``AttestationError`` unless the evidence attests the keys and measurement."""


class DevStatementVerifier(AttestationVerifier):
    """The dev statement, checked against the authority the on-chain dev verifier names."""

    kind = "dev"
    hardware_guarantee = False

    def __init__(self, verifier: DevVerifierClient) -> None:
        self.verifier = verifier

    def verify(self, record: EnclaveRecord) -> None:
        """Recover the statement's signer, compare it with the dev authority, check freshness.

        A statement is fresh when the enclave registered by its expiry (``registered_at``
        at most ``valid_until``), which is what the verifier contract checked at that
        moment. A registered enclave stays valid after its statement expires: freshness
        bounds how long a statement can wait to register (and the registry admits each
        statement once), while revocation is what ends trust in a registered enclave.
        """
        try:
            evidence = DevEvidence.from_bytes(record.evidence)
            signer = recover_enclave_statement(
                self.verifier.domain(),
                record.signer,
                record.hpke_public_key,
                record.measurement,
                record.evidence,
            )
        except Exception as exc:
            raise AttestationError(f"enclave {record.enclave_id}: unreadable evidence") from exc
        authority = to_checksum_address(self.verifier.authority())
        if to_checksum_address(signer) != authority:
            raise AttestationError(
                f"enclave {record.enclave_id}: statement signed by {signer}, "
                f"not by the dev authority {authority}"
            )
        if record.registered_at > evidence.valid_until:
            raise AttestationError(
                f"enclave {record.enclave_id}: its statement expired at {evidence.valid_until}, "
                f"before the enclave registered at {record.registered_at}"
            )


def verify_enclave(
    registry: EnclaveRegistryClient,
    verifiers: dict[str, AttestationVerifier],
    enclave_id: int,
    *,
    pinned_measurement: bytes | None = None,
) -> VerifiedEnclave:
    """Check an enclave on chain before encrypting to it.

    Not revoked, admitted by a known and still-approved verifier, valid evidence, and
    (when given) the measurement a contributor pinned. ``verifiers`` maps verifier
    contract addresses to the verifier for their evidence.
    """
    record = registry.get(enclave_id)
    if record.revoked:
        raise AttestationError(f"enclave {enclave_id} is revoked")
    verifier = verifiers.get(to_checksum_address(record.verifier))
    if verifier is None:
        raise AttestationError(
            f"enclave {enclave_id} was admitted by {record.verifier}, a verifier this client "
            "does not know how to check"
        )
    if not registry.is_verifier_approved(record.verifier):
        raise AttestationError(f"the verifier {record.verifier} is no longer approved")
    verifier.verify(record)
    if pinned_measurement is not None and record.measurement != pinned_measurement:
        raise AttestationError(
            f"enclave {enclave_id} runs code measured 0x{record.measurement.hex()}, "
            f"not the pinned 0x{pinned_measurement.hex()}"
        )
    try:
        public = HpkePublicKey.from_bytes(record.hpke_public_key)
    except ValueError as exc:
        raise AttestationError(f"enclave {enclave_id} has a malformed HPKE key") from exc
    return VerifiedEnclave(record, verifier.kind, verifier.hardware_guarantee, public)
