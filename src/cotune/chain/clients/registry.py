"""Typed clients of ``EnclaveRegistry`` and ``DevAttestationVerifier``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from cotune.chain.clients.base import ContractClient
from cotune.chain.events import EnclaveRegistered
from cotune.chain.statements import dev_verifier_domain, sign_enclave_statement
from cotune.chain.transactions import TxResult
from cotune.crypto.eip712 import Eip712Domain

DEFAULT_STATEMENT_VALIDITY = 3600
"""Seconds of chain time a dev statement from ``DevVerifierClient.attest`` can register."""


@dataclass(frozen=True)
class EnclaveRecord:
    """An enclave as the registry holds it.

    ``revoked`` when the admin revoked it, or another record with its signer or HPKE key.
    """

    enclave_id: int
    signer: str
    verifier: str
    registered_at: int
    revoked: bool
    measurement: bytes
    hpke_public_key: bytes
    evidence: bytes


class DevVerifierClient(ContractClient):
    """The dev attestation verifier: a dev-authority signature, no hardware guarantee."""

    CONTRACT = "DevAttestationVerifier"

    def authority(self) -> str:
        """The dev-authority address whose statements it accepts."""
        return str(self._call("authority"))

    def domain(self) -> Eip712Domain:
        """The EIP-712 domain its statements are signed under."""
        return dev_verifier_domain(self.chain.chain_id, self.address)

    def attest(
        self,
        authority: LocalAccount,
        signer: str,
        hpke_public_key: bytes,
        measurement: bytes,
        *,
        valid_for: int = DEFAULT_STATEMENT_VALIDITY,
        nonce: bytes | None = None,
    ) -> bytes:
        """Sign the dev statement for an enclave (as the dev authority); returns evidence.

        It can register the enclave for ``valid_for`` seconds from the latest block's
        time, once; ``nonce`` (default: 32 random bytes) makes each statement distinct.
        """
        return sign_enclave_statement(
            authority,
            self.domain(),
            signer,
            hpke_public_key,
            measurement,
            valid_until=self.chain.timestamp() + valid_for,
            nonce=os.urandom(32) if nonce is None else nonce,
        )

    def verify(
        self, signer: str, hpke_public_key: bytes, measurement: bytes, evidence: bytes
    ) -> bool:
        """Whether the contract accepts ``evidence`` for this enclave."""
        return bool(self._call("verify", signer, hpke_public_key, measurement, evidence))

    def kind(self) -> str:
        """The verifier kind ("dev")."""
        return str(self._call("kind"))


class EnclaveRegistryClient(ContractClient):
    """Register, look up and revoke attested enclaves."""

    CONTRACT = "EnclaveRegistry"

    def set_verifier(self, verifier: str, approved: bool = True) -> TxResult:
        """Approve (or stop approving) an attestation verifier (admin)."""
        return self._send("setVerifier", verifier, approved)

    def is_verifier_approved(self, verifier: str) -> bool:
        """Whether ``verifier`` may admit enclaves."""
        return bool(self._call("approvedVerifier", verifier))

    def register(
        self,
        signer: str,
        hpke_public_key: bytes,
        measurement: bytes,
        verifier: str,
        evidence: bytes,
    ) -> int:
        """Register an enclave; returns its id."""
        result = self._send("register", signer, hpke_public_key, measurement, verifier, evidence)
        event: EnclaveRegistered = result.first(EnclaveRegistered)
        return event.enclave_id

    def revoke(self, enclave_id: int) -> TxResult:
        """Revoke an enclave and, for good, its signer and HPKE key (admin)."""
        return self._send("revoke", enclave_id)

    def is_signer_revoked(self, signer: str) -> bool:
        """Whether ``signer`` belonged to a revoked enclave (it never registers again)."""
        return bool(self._call("isSignerRevoked", signer))

    def is_hpke_key_revoked(self, hpke_public_key: bytes) -> bool:
        """Whether the key belonged to a revoked enclave (it never registers again)."""
        return bool(self._call("isHpkeKeyRevoked", keccak(hpke_public_key)))

    def is_evidence_used(self, evidence: bytes) -> bool:
        """Whether ``evidence`` has registered an enclave (it never registers another)."""
        return bool(self._call("isEvidenceUsed", keccak(evidence)))

    def get(self, enclave_id: int) -> EnclaveRecord:
        """The record of an enclave; ``RevertError`` (UnknownEnclave) when there is none."""
        raw, revoked = self._call("getEnclave", enclave_id)
        return EnclaveRecord(
            enclave_id=enclave_id,
            signer=raw[0],
            verifier=raw[1],
            registered_at=int(raw[2]),
            revoked=bool(revoked),
            measurement=bytes(raw[3]),
            hpke_public_key=bytes(raw[5]),
            evidence=bytes(raw[6]),
        )

    def count(self) -> int:
        """How many enclaves were ever registered."""
        return int(self._call("enclaveCount"))

    def admin(self) -> str:
        """The registry admin."""
        return str(self._call("owner"))
