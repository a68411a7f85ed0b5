"""A participant's identity: an Ethereum account plus an HPKE key pair."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from cotune.crypto.hpke import HpkePrivateKey, HpkePublicKey, HpkeSuite


@dataclass(frozen=True)
class PublicIdentity:
    """What a participant shares: its address and HPKE public key."""

    address: str
    hpke_public_key: HpkePublicKey

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form, as printed by ``cotune keys export-public``."""
        return {
            "address": self.address,
            "hpke_suite": self.hpke_public_key.suite.value,
            "hpke_public_key": self.hpke_public_key.to_hex(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PublicIdentity:
        """Parse :meth:`to_dict` output, checking the address and the key."""
        try:
            address = to_checksum_address(data["address"])
            key = HpkePublicKey.from_hex(data["hpke_public_key"])
        except KeyError as exc:
            raise ValueError(f"public identity is missing field {exc.args[0]!r}") from None
        suite = data.get("hpke_suite")
        if suite is not None and suite != key.suite.value:
            raise ValueError(f"hpke_suite says {suite!r} but the key is a {key.suite.value} key")
        return cls(address, key)

    @classmethod
    def from_json(cls, text: str) -> PublicIdentity:
        """Parse the JSON text written by ``cotune keys export-public``."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("public identity must be a JSON object")
        return cls.from_dict(data)


@dataclass(frozen=True)
class Identity:
    """A participant's secrets: the wallet that signs and pays, and the HPKE key that decrypts."""

    account: LocalAccount
    hpke: HpkePrivateKey

    @classmethod
    def generate(cls, suite: HpkeSuite = HpkeSuite.X25519) -> Identity:
        """Fresh random wallet and HPKE key."""
        return cls(Account.create(), HpkePrivateKey.generate(suite))

    @property
    def address(self) -> str:
        """The checksummed Ethereum address."""
        return str(self.account.address)

    def public(self) -> PublicIdentity:
        """The shareable half."""
        return PublicIdentity(self.address, self.hpke.public_key())

    def __repr__(self) -> str:
        return f"Identity(address={self.address}, hpke={self.hpke.suite.value})"
