"""The enclave runtime: its keys, its measurement and its (dev) attestation.

The enclave creates an HPKE key (contributors encrypt to it) and a signer key (it
finalizes sessions and signs rejection certificates) at first start and never exports
them: callers get public parts and operations (decrypt, sign), not keys.

**Dev mode gives no hardware guarantee.** The "enclave" is this process; its statement
is signed by a local dev-authority key, and its keys are sealed at rest under an
operator-supplied secret so a restart keeps the same identity. Whoever holds that
secret, or this process's memory, can read everything the enclave sees. A real TEE
(Intel TDX, AMD SEV-SNP, a 0G Tapp) would keep the keys in protected memory and seal
them to its own hardware key; see :mod:`cotune.aggregator.attestation`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cotune.aggregator.bindings import derive_salt
from cotune.chain.statements import RejectionCertificate
from cotune.common.atomic import write_bytes_atomic
from cotune.common.errors import CotuneError
from cotune.crypto.eip712 import Eip712Domain
from cotune.crypto.hpke import HpkePrivateKey, HpkePublicKey, HpkeSuite
from cotune.crypto.stream import decrypt_bytes

DEV_MODE_WARNING = (
    "DEV MODE: the enclave is an ordinary process attested by a local dev key; "
    "it gives no hardware guarantee"
)
"""Shown on every surface that shows a dev enclave."""

SEALED_FORMAT = "cotune-enclave-sealed/1"
_SCRYPT_N = 2**15


class EnclaveKeyError(CotuneError):
    """The sealed enclave keys could not be opened (wrong operator secret, damaged file)."""


@dataclass(frozen=True)
class EnclavePublic:
    """What the enclave shows the world: its signer address and HPKE public key."""

    signer: str
    hpke_public_key: HpkePublicKey

    def to_dict(self) -> dict[str, str]:
        """Plain JSON-able form."""
        return {"signer": self.signer, "hpke_public_key": self.hpke_public_key.to_hex()}


class EnclaveKeys:
    """The enclave's two secret keys, used only through its methods."""

    def __init__(self, signer: LocalAccount, hpke: HpkePrivateKey) -> None:
        self._signer = signer
        self._hpke = hpke
        self.public = EnclavePublic(str(signer.address), hpke.public_key())

    @classmethod
    def generate(cls, suite: HpkeSuite = HpkeSuite.X25519) -> EnclaveKeys:
        """Fresh keys."""
        return cls(Account.create(), HpkePrivateKey.generate(suite))

    def __repr__(self) -> str:
        return f"EnclaveKeys(signer={self.public.signer})"

    @property
    def account(self) -> LocalAccount:
        """The signer as a transaction-sending account (its key stays in this process)."""
        return self._signer

    def decrypt(self, ciphertext: bytes, info: bytes) -> bytes:
        """Open a stream ciphertext made for this enclave under context ``info``."""
        return decrypt_bytes(ciphertext, self._hpke, info)

    def derive_salt(self, info: bytes) -> bytes:
        """A secret salt for ``info``, the same after every restart (for unsalted uploads)."""
        return derive_salt(self._hpke.secret_bytes(), info)

    def sign_rejection(self, certificate: RejectionCertificate, domain: Eip712Domain) -> bytes:
        """Sign a rejection certificate as this enclave."""
        return certificate.sign(self._signer, domain)

    # ---- sealing at rest (dev mode) ------------------------------------------------------

    def seal(self, operator_secret: str) -> bytes:
        """The keys encrypted under ``operator_secret`` (scrypt + AES-GCM, public fields as AAD)."""
        salt = os.urandom(16)
        nonce = os.urandom(12)
        header = self._header()
        secret = json.dumps(
            {"signer": self._signer.key.hex(), "hpke": self._hpke.secret_bytes().hex()}
        ).encode()
        body = AESGCM(_derive(operator_secret, salt)).encrypt(nonce, secret, _aad(header))
        document = header | {"salt": salt.hex(), "nonce": nonce.hex(), "ciphertext": body.hex()}
        return json.dumps(document, sort_keys=True, indent=2).encode()

    def _header(self) -> dict[str, str]:
        return {"format": SEALED_FORMAT, **self.public.to_dict()}

    @classmethod
    def unseal(cls, sealed: bytes, operator_secret: str) -> EnclaveKeys:
        """Open sealed keys; ``EnclaveKeyError`` on a wrong secret or a damaged file."""
        try:
            document = json.loads(sealed)
            header = {k: document[k] for k in ("format", "signer", "hpke_public_key")}
            if header["format"] != SEALED_FORMAT:
                raise EnclaveKeyError(f"not a sealed enclave key file: {header['format']!r}")
            key = _derive(operator_secret, bytes.fromhex(document["salt"]))
            secret = AESGCM(key).decrypt(
                bytes.fromhex(document["nonce"]),
                bytes.fromhex(document["ciphertext"]),
                _aad(header),
            )
        except EnclaveKeyError:
            raise
        except Exception as exc:
            raise EnclaveKeyError(
                "cannot open the sealed enclave keys: wrong operator secret or a damaged file"
            ) from exc
        parts = json.loads(secret)
        public = HpkePublicKey.from_hex(header["hpke_public_key"])
        keys = cls(
            Account.from_key(bytes.fromhex(parts["signer"])),
            HpkePrivateKey(public.suite, bytes.fromhex(parts["hpke"])),
        )
        if keys.public.to_dict() != {k: header[k] for k in ("signer", "hpke_public_key")}:
            raise EnclaveKeyError("the sealed enclave keys do not match their public fields")
        return keys


def load_or_create_keys(path: Path, operator_secret: str) -> EnclaveKeys:
    """The enclave keys sealed at ``path``, created (mode 0600) on first start."""
    if path.exists():
        return EnclaveKeys.unseal(path.read_bytes(), operator_secret)
    keys = EnclaveKeys.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, keys.seal(operator_secret), mode=0o600)
    return keys


def _derive(secret: str, salt: bytes) -> bytes:
    if not secret:
        raise EnclaveKeyError("the operator secret is empty (set COTUNE_ENCLAVE_SECRET)")
    return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=8, p=1).derive(secret.encode())


def _aad(header: dict[str, str]) -> bytes:
    return json.dumps(header, sort_keys=True).encode()
