"""EIP-712 typed-data signing and recovery.

Every signature cotune puts on chain (enclave statements, rejection
certificates, re-sealing proofs) is typed data whose domain carries the chain
id and the verifying contract, so it cannot be replayed on another chain or
against another contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from cotune.crypto.errors import SignatureError

_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

TypeFields = Sequence[tuple[str, str]]
"""The fields of one struct type as ``(name, solidity type)`` pairs, in order."""


@dataclass(frozen=True)
class Eip712Domain:
    """The separator that binds a signature to one chain and one contract."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str

    def to_dict(self) -> dict[str, Any]:
        """The ``domain`` member of an EIP-712 typed-data document."""
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


_DOMAIN_FIELDS: TypeFields = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
)


def typed_data(
    domain: Eip712Domain,
    types: Mapping[str, TypeFields],
    primary_type: str,
    message: Mapping[str, Any],
) -> dict[str, Any]:
    """Assemble a full EIP-712 typed-data document (the ``eth_signTypedData_v4`` shape)."""
    if primary_type not in types:
        raise ValueError(f"primary type {primary_type!r} is not among the declared types")
    all_types = {"EIP712Domain": _DOMAIN_FIELDS, **types}
    return {
        "types": {
            name: [{"name": field, "type": kind} for field, kind in fields]
            for name, fields in all_types.items()
        },
        "primaryType": primary_type,
        "domain": domain.to_dict(),
        "message": dict(message),
    }


def _signable(
    domain: Eip712Domain,
    types: Mapping[str, TypeFields],
    primary_type: str,
    message: Mapping[str, Any],
) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(domain, types, primary_type, message))


def typed_data_digest(
    domain: Eip712Domain,
    types: Mapping[str, TypeFields],
    primary_type: str,
    message: Mapping[str, Any],
) -> bytes:
    """The 32-byte digest a contract recomputes and passes to ``ecrecover``."""
    signable = _signable(domain, types, primary_type, message)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_typed_data(
    account: LocalAccount,
    domain: Eip712Domain,
    types: Mapping[str, TypeFields],
    primary_type: str,
    message: Mapping[str, Any],
) -> bytes:
    """Sign typed data; returns the 65-byte ``r || s || v`` signature."""
    signed = account.sign_message(_signable(domain, types, primary_type, message))
    return bytes(signed.signature)


def recover_typed_data_signer(
    domain: Eip712Domain,
    types: Mapping[str, TypeFields],
    primary_type: str,
    message: Mapping[str, Any],
    signature: bytes,
) -> str:
    """The checksummed address that produced ``signature`` over this typed data."""
    if len(signature) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(signature)}")
    # Refuse what OpenZeppelin's ECDSA refuses, so an off-chain check never accepts
    # a signature the contracts reject: high-s (malleable) and v outside {27, 28}.
    if int.from_bytes(signature[32:64], "big") > _SECP256K1_HALF_N:
        raise SignatureError("signature s value is in the upper half of the curve order")
    if signature[64] not in (27, 28):
        raise SignatureError(f"signature v must be 27 or 28, got {signature[64]}")
    try:
        return str(
            Account.recover_message(
                _signable(domain, types, primary_type, message), signature=signature
            )
        )
    except (ValueError, TypeError, BadSignature) as exc:
        raise SignatureError(f"signature does not recover: {exc}") from None


def verify_typed_data(
    expected_signer: str,
    domain: Eip712Domain,
    types: Mapping[str, TypeFields],
    primary_type: str,
    message: Mapping[str, Any],
    signature: bytes,
) -> None:
    """Raise ``SignatureError`` unless ``signature`` is ``expected_signer``'s over this data."""
    signer = recover_typed_data_signer(domain, types, primary_type, message, signature)
    if signer != to_checksum_address(expected_signer):
        raise SignatureError(f"signed by {signer}, expected {to_checksum_address(expected_signer)}")
