"""Typed clients of ``EnclaveRegistry`` and ``DevAttestationVerifier``."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from cotune.chain.clients.base import ContractClient
from cotune.chain.events import EnclaveRegistered
from cotune.chain.statements import dev_verifier_domain, sign_enclave_statement
from cotune.chain.transactions import TxResult
from cotune.crypto.eip712 import Eip712Domain


@dataclass(frozen=True)
class EnclaveRecord:
    """An enclave as the registry holds it."""

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
        self, authority: LocalAccount, signer: str, hpke_public_key: bytes, measurement: bytes
    ) -> bytes:
        """Sign the dev statement for an enclave (as the dev authority)."""
        return sign_enclave_statement(
            authority, self.domain(), signer, hpke_public_key, measurement
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
        """Revoke an enclave (admin)."""
        return self._send("revoke", enclave_id)

    def get(self, enclave_id: int) -> EnclaveRecord:
        """The record of an enclave; ``RevertError`` (UnknownEnclave) when there is none."""
        raw = self._call("getEnclave", enclave_id)
        return EnclaveRecord(
            enclave_id=enclave_id,
            signer=raw[0],
            verifier=raw[1],
            registered_at=int(raw[2]),
            revoked=bool(raw[3]),
            measurement=bytes(raw[4]),
            hpke_public_key=bytes(raw[5]),
            evidence=bytes(raw[6]),
        )

    def count(self) -> int:
        """How many enclaves were ever registered."""
        return int(self._call("enclaveCount"))

    def admin(self) -> str:
        """The registry admin."""
        return str(self._call("owner"))
