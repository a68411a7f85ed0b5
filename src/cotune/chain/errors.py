"""Chain errors, and the decoding of contract reverts into messages a person can act on."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from cotune.chain.limits import MAX_CONTRIBUTORS
from cotune.crypto.hpke import HpkeSuite

STATES = ("None", "Open", "Training", "Finalized", "Cancelled", "Expired")
"""``Coordinator.State`` in declaration order."""
STATUSES = ("None", "Submitted", "Accepted", "Slashed", "Refunded")
"""``Coordinator.Status`` in declaration order."""

_ENUM_ARGS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("WrongState", "actual"): STATES,
    ("WrongState", "required"): STATES,
    ("NotEligible", "status"): STATUSES,
}
"""(error, argument) pairs whose integer values are enum members, shown by name."""

_X25519_KEY_SIZE = 2 + HpkeSuite.X25519.public_key_size
_MLKEM768_X25519_KEY_SIZE = 2 + HpkeSuite.MLKEM768_X25519.public_key_size

_MESSAGES: Mapping[str, str] = {
    # Coordinator
    "UnknownSession": "session {sessionId} does not exist",
    "WrongState": "session {sessionId} is not {required}: it is {actual}",
    "NotSessionOwner": "{caller} is not the owner of session {sessionId}",
    "NotEnclaveSigner": "{caller} is not the enclave signer of session {sessionId}",
    "EnclaveRevoked": "enclave {enclaveId} has been revoked",
    "MeasurementMismatch": "pinned measurement {pinned} differs from the enclave's {registered}",
    "InvalidQuorum": "quorum {quorum} must be between 1 and max contributors {maxContributors} "
    f"(at most {MAX_CONTRIBUTORS})",
    "InvalidDeadlines": "deadlines must be in the future and the training deadline "
    "({trainingDeadline}) after the submit deadline ({submitDeadline})",
    "NotAllowListed": "{contributor} is not on the allow-list of session {sessionId}",
    "AlreadySubmitted": "{contributor} has already submitted to session {sessionId}",
    "StakeTooLow": "stake {sent} wei is below the session's minimum of {required} wei",
    "StakeTooHigh": "stake {sent} wei does not fit in 96 bits",
    "EmptyCiphertextHash": "the ciphertext hash is zero",
    "CancelAfterQuorum": "session {sessionId} met its quorum and its submit deadline "
    "({submitDeadline}) has passed: it can no longer be cancelled, only closed",
    "SubmitDeadlinePassed": "the submit deadline of session {sessionId} ({deadline}) has passed",
    "SubmitDeadlineNotReached": "session {sessionId} accepts submissions until {deadline}",
    "TrainingDeadlinePassed": "the training deadline of session {sessionId} ({deadline}) "
    "has passed",
    "TrainingDeadlineNotReached": "session {sessionId} may still finalize until {deadline}",
    "LengthMismatch": "the per-contributor lists differ in length",
    "NoAcceptedContributors": "a session finalizes with at least one accepted contributor",
    "NotEligible": "{contributor} cannot be accepted or slashed in session {sessionId}: "
    "its contribution is {status}",
    "ZeroWeight": "accepted contributor {contributor} has weight 0",
    "InvalidSignature": "signature is from {recovered}, expected the enclave signer {expected}",
    "CiphertextMismatch": "certificate names ciphertext {certified} but {committed} was committed",
    "AlreadySlashed": "{contributor} has already been slashed in session {sessionId}",
    "SlashWindowClosed": "the slash window of session {sessionId} closed at {closedAt}",
    "NothingToClaim": "{account} has nothing to claim from session {sessionId}",
    "TransferFailed": "sending {amount} wei to {to} failed",
    # EnclaveRegistry and verifiers
    "VerifierNotApproved": "attestation verifier {verifier} is not approved by the registry",
    "AttestationRejected": "verifier {verifier} rejected the attestation evidence",
    "ZeroSigner": "the enclave signer address is zero",
    "UnknownEnclave": "enclave {enclaveId} is not registered",
    "AlreadyRevoked": "enclave {enclaveId} is already revoked",
    "SignerRevoked": "signer {signer} belonged to a revoked enclave and can never register "
    "again: use fresh keys",
    "HpkeKeyRevoked": "HPKE key {hpkeKeyHash} (keccak256) belonged to a revoked enclave and "
    "can never register again: use fresh keys",
    "EvidenceReused": "this attestation evidence (keccak256 {evidenceHash}) has already "
    "registered an enclave: attest again",
    "ZeroAuthority": "the dev authority address is zero",
    # HpkeKeys (Coordinator.submit, EnclaveRegistry.register)
    "InvalidHpkeKey": "an HPKE public key of {length} bytes with KEM id {kemId} is not "
    f"supported: expected KEM 0x0020 with {_X25519_KEY_SIZE} bytes (X25519) or 0x647a with "
    f"{_MLKEM768_X25519_KEY_SIZE} bytes (ML-KEM-768 + X25519)",
    "SmallOrderX25519Key": "the X25519 part of the HPKE key ({u}) is a point of small order: "
    "no secret can be shared with it",
    "InvalidMlKemKey": "coefficient {index} of the ML-KEM-768 part of the HPKE key is not "
    "below 3329: it is not an ML-KEM-768 public key",
    # ModelNFT
    "NotDeployer": "only the deployer may set the minter",
    "MinterAlreadySet": "the minter is already set",
    "NotMinter": "{caller} may not mint model tokens",
    "ModelAlreadyRecorded": "session {sessionId} already has a model",
    "UseITransferFrom": "model tokens move only with iTransferFrom (a re-sealed key)",
    "InvalidResealProof": "re-seal proof is from {recovered}, expected the enclave {expected}",
    "EmptySealedKey": "the sealed key for the receiver is empty",
    # DatasetMarket
    "ZeroPrice": "a listing needs a price above 0 wei",
    "EmptyEntryHash": "a listing must pin the signed entry's hash",
    "EntryHashPinned": "this version is pinned to entry {pinned}, not {given}",
    "NotListed": "version {version} of dataset {datasetKey} is not on sale",
    "WrongPayment": "sent {sent} wei, the price is {price} wei",
    "AlreadyPurchased": "{buyer} already bought version {version} (receipt {receiptId})",
    "NothingToWithdraw": "{account} has no proceeds to withdraw",
    # OpenZeppelin
    "OwnableUnauthorizedAccount": "{account} is not the admin",
    "ERC721NonexistentToken": "token {tokenId} does not exist",
    "ERC721IncorrectOwner": "token {tokenId} is owned by {owner}, not {sender}",
    "ERC721InsufficientApproval": "{operator} may not move token {tokenId}",
    "ERC721InvalidReceiver": "{receiver} cannot receive model tokens",
    "ReentrancyGuardReentrantCall": "reentrant call",
    "OwnableInvalidOwner": "{owner} cannot be the admin",
    "ERC721InvalidApprover": "{approver} may not approve transfers of this token",
    "ERC721InvalidOperator": "{operator} cannot be an operator",
    "ERC721InvalidOwner": "{owner} cannot own model tokens",
    "ERC721InvalidSender": "{sender} cannot send model tokens",
    "InvalidShortString": "a string is too long for the EIP-712 domain",
    "StringTooLong": "string {str} is too long",
    "SafeCastOverflowedUintDowncast": "value {value} does not fit in {bits} bits",
}


class ChainError(Exception):
    """Base of every error from the chain layer."""


class DeploymentError(ChainError):
    """A deployment record is missing, malformed or does not match the chain."""


class TransactionError(ChainError):
    """A transaction could not be sent or was not mined."""


@dataclass(frozen=True)
class _ErrorSpec:
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]


class RevertError(ChainError):
    """A contract call reverted; ``error`` and ``args`` hold the decoded custom error."""

    def __init__(self, contract: str, function: str, error: str, args: Mapping[str, Any]) -> None:
        self.contract = contract
        self.function = function
        self.error = error
        self.args_by_name = dict(args)
        super().__init__(f"{contract}.{function}: {describe_error(error, args)}")


def describe_error(error: str, args: Mapping[str, Any]) -> str:
    """A sentence for a decoded custom error, with enums by name and bytes in hex."""
    shown = {name: _show(error, name, value) for name, value in args.items()}
    template = _MESSAGES.get(error)
    if template is None:
        inner = ", ".join(f"{k}={v}" for k, v in shown.items())
        return f"{error}({inner})"
    return template.format(**shown)


def _show(error: str, name: str, value: Any) -> str:
    names = _ENUM_ARGS.get((error, name))
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def known_error_names() -> frozenset[str]:
    """Names of the custom errors that have a written message."""
    return frozenset(_MESSAGES)


class ErrorDecoder:
    """Maps 4-byte selectors of the custom errors in some ABIs to their definitions."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._specs: dict[bytes, _ErrorSpec] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = tuple(_canonical_type(i) for i in item["inputs"])
                selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
                names = tuple(i["name"] for i in item["inputs"])
                self._specs[selector] = _ErrorSpec(item["name"], names, types)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Name and arguments of the revert payload ``data``."""
        if len(data) < 4:
            return "EmptyRevert", {}
        selector, body = data[:4], data[4:]
        if selector == _ERROR_STRING:
            return "Error", {"reason": abi_decode(["string"], body)[0]}
        if selector == _PANIC:
            return "Panic", {"code": abi_decode(["uint256"], body)[0]}
        spec = self._specs.get(selector)
        if spec is None:
            return "UnknownError", {"data": data}
        values = abi_decode(list(spec.arg_types), body)
        return spec.name, {
            name: to_checksum_address(value) if kind == "address" else value
            for name, kind, value in zip(spec.arg_names, spec.arg_types, values, strict=True)
        }


_ERROR_STRING = keccak(text="Error(string)")[:4]
_PANIC = keccak(text="Panic(uint256)")[:4]


def _canonical_type(param: Mapping[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){kind[5:]}"
    return kind


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert payload inside a web3 or eth-tester exception, when it has one."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    message = str(exc.args[0]) if exc.args else ""
    prefix = "execution reverted: "
    if not message.startswith(prefix):
        return None
    payload = message[len(prefix) :]
    try:
        if payload.startswith(("b'", 'b"')):
            value = ast.literal_eval(payload)
            return value if isinstance(value, bytes) else None
        if payload.startswith("0x"):
            return bytes.fromhex(payload[2:])
    except (ValueError, SyntaxError):
        return None  # a reason string that merely looks like a payload
    return None
