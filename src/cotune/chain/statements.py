"""The EIP-712 statements cotune's contracts verify, built and signed off chain.

Each mirrors a typehash in ``contracts/``; the domain names the chain and the
verifying contract, so no signature replays across chains or contracts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Self

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from cotune.crypto.eip712 import (
    Eip712Domain,
    TypeFields,
    recover_typed_data_signer,
    sign_typed_data,
    typed_data_digest,
)

ENCLAVE_STATEMENT_TYPES: dict[str, TypeFields] = {
    "EnclaveStatement": (
        ("signer", "address"),
        ("hpkeKeyHash", "bytes32"),
        ("measurement", "bytes32"),
        ("validUntil", "uint64"),
        ("nonce", "bytes32"),
    )
}
REJECTION_TYPES: dict[str, TypeFields] = {
    "RejectionCertificate": (
        ("sessionId", "uint256"),
        ("contributor", "address"),
        ("ciphertextHash", "bytes32"),
        ("reasonCode", "uint16"),
        ("score", "int64"),
        ("evidenceHash", "bytes32"),
    )
}
RESEAL_TYPES: dict[str, TypeFields] = {
    "ResealStatement": (
        ("tokenId", "uint256"),
        ("from", "address"),
        ("to", "address"),
        ("sealedKeyHash", "bytes32"),
        ("transferNonce", "uint256"),
    )
}


def dev_verifier_domain(chain_id: int, verifier: str) -> Eip712Domain:
    """Domain of ``DevAttestationVerifier`` statements."""
    return Eip712Domain("cotune DevAttestationVerifier", "1", chain_id, verifier)


def coordinator_domain(chain_id: int, coordinator: str) -> Eip712Domain:
    """Domain of rejection certificates."""
    return Eip712Domain("cotune Coordinator", "1", chain_id, coordinator)


def model_nft_domain(chain_id: int, model_nft: str) -> Eip712Domain:
    """Domain of re-seal statements."""
    return Eip712Domain("cotune ModelNFT", "1", chain_id, model_nft)


@dataclass(frozen=True)
class DevEvidence:
    """The dev verifier's evidence: a statement's expiry and nonce, and its signature.

    Serialised as ``DevAttestationVerifier`` reads it: ``valid_until`` (8 bytes, big
    endian), ``nonce`` (32 bytes), the 65-byte signature.
    """

    valid_until: int
    nonce: bytes
    signature: bytes

    SIZE = 8 + 32 + 65

    def to_bytes(self) -> bytes:
        """The evidence bytes the registry stores."""
        return self.valid_until.to_bytes(8, "big") + self.nonce + self.signature

    @classmethod
    def from_bytes(cls, evidence: bytes) -> Self:
        """Parse evidence bytes; ``ValueError`` when they are not ``SIZE`` long."""
        if len(evidence) != cls.SIZE:
            raise ValueError(f"dev evidence is {cls.SIZE} bytes, got {len(evidence)}")
        return cls(int.from_bytes(evidence[:8], "big"), evidence[8:40], evidence[40:])


def _statement(
    signer: str, hpke_public_key: bytes, measurement: bytes, valid_until: int, nonce: bytes
) -> dict[str, object]:
    return {
        "signer": signer,
        "hpkeKeyHash": keccak(hpke_public_key),
        "measurement": measurement,
        "validUntil": valid_until,
        "nonce": nonce,
    }


def sign_enclave_statement(
    authority: LocalAccount,
    domain: Eip712Domain,
    signer: str,
    hpke_public_key: bytes,
    measurement: bytes,
    *,
    valid_until: int,
    nonce: bytes,
) -> bytes:
    """The dev authority's attestation that ``signer`` and the HPKE key run ``measurement``.

    Returns the evidence bytes (see :class:`DevEvidence`). The statement can register an
    enclave until block time ``valid_until``, and only once: ``nonce`` (32 random bytes)
    tells apart statements about the same keys.
    """
    message = _statement(signer, hpke_public_key, measurement, valid_until, nonce)
    signature = sign_typed_data(
        authority, domain, ENCLAVE_STATEMENT_TYPES, "EnclaveStatement", message
    )
    return DevEvidence(valid_until, nonce, signature).to_bytes()


def recover_enclave_statement(
    domain: Eip712Domain, signer: str, hpke_public_key: bytes, measurement: bytes, evidence: bytes
) -> str:
    """Who signed a dev enclave statement (compare with the verifier's authority).

    ``ValueError`` when ``evidence`` is not dev evidence at all.
    """
    parsed = DevEvidence.from_bytes(evidence)
    message = _statement(signer, hpke_public_key, measurement, parsed.valid_until, parsed.nonce)
    return recover_typed_data_signer(
        domain, ENCLAVE_STATEMENT_TYPES, "EnclaveStatement", message, parsed.signature
    )


@dataclass(frozen=True)
class RejectionCertificate:
    """The enclave's signed reason for rejecting one contribution to one session."""

    session_id: int
    contributor: str
    ciphertext_hash: bytes
    reason_code: int
    score: int
    evidence_hash: bytes

    def message(self) -> dict[str, object]:
        """The EIP-712 message (Solidity field names)."""
        return {
            "sessionId": self.session_id,
            "contributor": self.contributor,
            "ciphertextHash": self.ciphertext_hash,
            "reasonCode": self.reason_code,
            "score": self.score,
            "evidenceHash": self.evidence_hash,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON form (bytes as hex), as the aggregator stores it."""
        return {
            "session_id": self.session_id,
            "contributor": self.contributor,
            "ciphertext_hash": self.ciphertext_hash.hex(),
            "reason_code": self.reason_code,
            "score": self.score,
            "evidence_hash": self.evidence_hash.hex(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RejectionCertificate:
        """The inverse of :meth:`to_dict` (extra members, such as a signature, ignored)."""
        return cls(
            session_id=int(raw["session_id"]),
            contributor=str(raw["contributor"]),
            ciphertext_hash=bytes.fromhex(raw["ciphertext_hash"]),
            reason_code=int(raw["reason_code"]),
            score=int(raw["score"]),
            evidence_hash=bytes.fromhex(raw["evidence_hash"]),
        )

    def as_tuple(self) -> tuple[int, str, bytes, int, int, bytes]:
        """The struct as the contract's ABI takes it."""
        d = asdict(self)
        return (
            d["session_id"],
            d["contributor"],
            d["ciphertext_hash"],
            d["reason_code"],
            d["score"],
            d["evidence_hash"],
        )

    def sign(self, enclave_signer: LocalAccount, domain: Eip712Domain) -> bytes:
        """Sign as the session's enclave."""
        return sign_typed_data(
            enclave_signer, domain, REJECTION_TYPES, "RejectionCertificate", self.message()
        )

    def digest(self, domain: Eip712Domain) -> bytes:
        """The digest the Coordinator recovers the signer from."""
        return typed_data_digest(domain, REJECTION_TYPES, "RejectionCertificate", self.message())

    def recover(self, domain: Eip712Domain, signature: bytes) -> str:
        """Who signed this certificate."""
        return recover_typed_data_signer(
            domain, REJECTION_TYPES, "RejectionCertificate", self.message(), signature
        )


def sign_reseal_statement(
    enclave_signer: LocalAccount,
    domain: Eip712Domain,
    *,
    token_id: int,
    sender: str,
    receiver: str,
    sealed_key: bytes,
    transfer_nonce: int,
) -> bytes:
    """The enclave's proof that ``sealed_key`` re-seals a token's model key to ``receiver``."""
    message = {
        "tokenId": token_id,
        "from": sender,
        "to": receiver,
        "sealedKeyHash": keccak(sealed_key),
        "transferNonce": transfer_nonce,
    }
    return sign_typed_data(enclave_signer, domain, RESEAL_TYPES, "ResealStatement", message)
