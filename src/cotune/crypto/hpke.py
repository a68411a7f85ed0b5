"""HPKE (RFC 9180) keys and small-message sealing.

Two suites, selectable per key:

* ``x25519`` (default): DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 + AES-256-GCM.
* ``mlkem768-x25519``: the post-quantum hybrid KEM ML-KEM-768 + X25519 with the
  same KDF and AEAD, for data that must stay secret for decades ("harvest now,
  decrypt later").

A serialised public key starts with the 2-byte KEM id, so a key always says
which suite it belongs to.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke as _hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from cotune.crypto.errors import ContextMismatchError, MalformedCiphertextError, WrongKeyError

KDF_ID_HKDF_SHA256: Final = 0x0001
AEAD_ID_AES_256_GCM: Final = 0x0002
FINGERPRINT_SIZE: Final = 8

_X25519_SIZE: Final = 32
_MLKEM768_PUBLIC_SIZE: Final = 1184
_MLKEM_SEED_SIZE: Final = 64


class HpkeSuite(enum.Enum):
    """An HPKE cipher suite; the value is the name used in files and on the CLI."""

    X25519 = "x25519"
    MLKEM768_X25519 = "mlkem768-x25519"

    @property
    def kem_id(self) -> int:
        """The KEM identifier from the IANA HPKE registry."""
        return _KEM_IDS[self]

    @property
    def public_key_size(self) -> int:
        """Length of the raw public key in bytes."""
        return _X25519_SIZE if self is HpkeSuite.X25519 else _MLKEM768_PUBLIC_SIZE + _X25519_SIZE

    @property
    def enc_size(self) -> int:
        """Length of the KEM encapsulation that prefixes every sealed message."""
        return _KEMS[self].enc_length()

    def _suite(self) -> _hpke.Suite:
        return _hpke.Suite(_KEMS[self], _hpke.KDF.HKDF_SHA256, _hpke.AEAD.AES_256_GCM)

    @classmethod
    def from_kem_id(cls, kem_id: int) -> HpkeSuite:
        """Look a suite up by KEM id; unknown ids raise ``MalformedCiphertextError``."""
        for suite, known in _KEM_IDS.items():
            if known == kem_id:
                return suite
        raise MalformedCiphertextError(f"unsupported HPKE KEM id 0x{kem_id:04x}")


_KEM_IDS: Final = {HpkeSuite.X25519: 0x0020, HpkeSuite.MLKEM768_X25519: 0x647A}
_KEMS: Final = {
    HpkeSuite.X25519: _hpke.KEM.X25519,
    HpkeSuite.MLKEM768_X25519: _hpke.KEM.MLKEM768_X25519,
}

_PublicObject = x25519.X25519PublicKey | _hpke.MLKEM768X25519PublicKey
_PrivateObject = x25519.X25519PrivateKey | _hpke.MLKEM768X25519PrivateKey


@dataclass(frozen=True)
class HpkePublicKey:
    """A recipient's public key: the suite plus the raw key bytes."""

    suite: HpkeSuite
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != self.suite.public_key_size:
            raise ValueError(
                f"{self.suite.value} public key must be {self.suite.public_key_size} bytes, "
                f"got {len(self.raw)}"
            )

    def to_bytes(self) -> bytes:
        """Serialise as KEM id (2 bytes, big endian) followed by the raw key."""
        return struct.pack(">H", self.suite.kem_id) + self.raw

    @classmethod
    def from_bytes(cls, data: bytes) -> HpkePublicKey:
        """Parse :meth:`to_bytes` output; a wrong length or KEM id raises ``ValueError``."""
        if len(data) < 2:
            raise ValueError("HPKE public key is shorter than its 2-byte KEM id")
        try:
            suite = HpkeSuite.from_kem_id(struct.unpack(">H", data[:2])[0])
        except MalformedCiphertextError as exc:
            raise ValueError(str(exc)) from None
        return cls(suite, bytes(data[2:]))

    def to_hex(self) -> str:
        """The serialised key as ``0x``-prefixed hex, the form used in JSON and on chain."""
        return "0x" + self.to_bytes().hex()

    @classmethod
    def from_hex(cls, text: str) -> HpkePublicKey:
        """Parse :meth:`to_hex` output."""
        try:
            data = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            raise ValueError("HPKE public key is not valid hex") from None
        return cls.from_bytes(data)

    def fingerprint(self) -> bytes:
        """A short identifier, so a ciphertext can say which key it was sealed to."""
        return hashlib.sha256(self.to_bytes()).digest()[:FINGERPRINT_SIZE]

    def _object(self) -> _PublicObject:
        if self.suite is HpkeSuite.X25519:
            return x25519.X25519PublicKey.from_public_bytes(self.raw)
        return _hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(self.raw[:_MLKEM768_PUBLIC_SIZE]),
            x25519.X25519PublicKey.from_public_bytes(self.raw[_MLKEM768_PUBLIC_SIZE:]),
        )


class HpkePrivateKey:
    """A recipient's private key. ``secret_bytes`` is for keystores only."""

    __slots__ = ("_object", "_public", "_secret", "suite")

    def __init__(self, suite: HpkeSuite, secret: bytes) -> None:
        self.suite = suite
        self._secret = bytes(secret)
        self._object: _PrivateObject
        if suite is HpkeSuite.X25519:
            if len(secret) != _X25519_SIZE:
                raise ValueError(f"x25519 secret must be {_X25519_SIZE} bytes")
            key = x25519.X25519PrivateKey.from_private_bytes(secret)
            self._object = key
            public_raw = key.public_key().public_bytes_raw()
        else:
            if len(secret) != _MLKEM_SEED_SIZE + _X25519_SIZE:
                raise ValueError(
                    f"mlkem768-x25519 secret must be {_MLKEM_SEED_SIZE + _X25519_SIZE} bytes"
                )
            pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(secret[:_MLKEM_SEED_SIZE])
            classic = x25519.X25519PrivateKey.from_private_bytes(secret[_MLKEM_SEED_SIZE:])
            self._object = _hpke.MLKEM768X25519PrivateKey(pq, classic)
            public_raw = (
                pq.public_key().public_bytes_raw() + classic.public_key().public_bytes_raw()
            )
        self._public = HpkePublicKey(suite, public_raw)

    @classmethod
    def generate(cls, suite: HpkeSuite = HpkeSuite.X25519) -> HpkePrivateKey:
        """A fresh random key of ``suite``."""
        classic = x25519.X25519PrivateKey.generate().private_bytes_raw()
        if suite is HpkeSuite.X25519:
            return cls(suite, classic)
        return cls(suite, mlkem.MLKEM768PrivateKey.generate().private_bytes_raw() + classic)

    def public_key(self) -> HpkePublicKey:
        """The matching public key."""
        return self._public

    def secret_bytes(self) -> bytes:
        """The raw secret (X25519 scalar, or ML-KEM seed + X25519 scalar)."""
        return self._secret

    def __repr__(self) -> str:
        return f"HpkePrivateKey(suite={self.suite.value}, public={self._public.to_hex()[:18]}…)"


def usable_public_key(data: bytes) -> HpkePublicKey:
    """Parse a serialised public key and prove something can be sealed to it.

    ``ValueError`` for a wrong length or KEM id, a malformed ML-KEM key, or an X25519
    point of small order (its shared secret would be all zero): the checks ``seal``
    would otherwise fail on, done before any work depends on the key.
    """
    key = HpkePublicKey.from_bytes(data)
    try:
        seal(b"", key, b"cotune/key-check/v1")
    except ValueError:
        raise
    except Exception as exc:  # the backend refuses the key in its own words
        raise ValueError(f"{key.suite.value} public key is not usable: {exc}") from None
    return key


_SEALED_VERSION: Final = 1
_SEALED_HEADER = struct.Struct(">BH8s")


def seal(plaintext: bytes, recipient: HpkePublicKey, info: bytes) -> bytes:
    """Encrypt a small message to ``recipient``, bound to the context ``info``.

    Layout: version (1) | KEM id (2) | recipient fingerprint (8) | enc | ciphertext.
    """
    body = recipient.suite._suite().encrypt(plaintext, recipient._object(), info=info)
    return (
        _SEALED_HEADER.pack(_SEALED_VERSION, recipient.suite.kem_id, recipient.fingerprint()) + body
    )


def unseal(sealed: bytes, private_key: HpkePrivateKey, info: bytes) -> bytes:
    """Open :func:`seal` output.

    Raises ``MalformedCiphertextError`` for bytes that are not a sealed message,
    ``WrongKeyError`` when it was sealed to another key, and
    ``ContextMismatchError`` when ``info`` differs (or the body was altered).
    """
    header_size = _SEALED_HEADER.size
    if len(sealed) < header_size + private_key.suite.enc_size + 16:
        raise MalformedCiphertextError(f"sealed message too short ({len(sealed)} bytes)")
    version, kem_id, fingerprint = _SEALED_HEADER.unpack_from(sealed)
    if version != _SEALED_VERSION:
        raise MalformedCiphertextError(f"unsupported sealed-message version {version}")
    suite = HpkeSuite.from_kem_id(kem_id)
    if suite is not private_key.suite:
        raise WrongKeyError(
            f"message was sealed to a {suite.value} key, this key is {private_key.suite.value}"
        )
    if fingerprint != private_key.public_key().fingerprint():
        raise WrongKeyError(
            f"message was sealed to key {fingerprint.hex()}, "
            f"not to this key {private_key.public_key().fingerprint().hex()}"
        )
    try:
        return suite._suite().decrypt(sealed[header_size:], private_key._object, info=info)
    except InvalidTag:
        raise ContextMismatchError(
            "sealed message does not open under this context: it was sealed for another "
            "chain, contract, session or contributor, or it was altered"
        ) from None
