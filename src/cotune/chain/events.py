"""Contract events as typed dataclasses, decoded straight from logs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from cotune.chain.artifacts import load_artifact


@dataclass(frozen=True)
class Event:
    """Where an event was emitted; subclasses add the event's own fields."""

    NAME: ClassVar[str] = ""
    CONTRACT: ClassVar[str] = ""

    address: str
    block_number: int
    log_index: int
    tx_hash: str

    @property
    def position(self) -> tuple[int, int]:
        """(block, log index): the event's place in the chain's total order."""
        return (self.block_number, self.log_index)


# --- Coordinator ------------------------------------------------------------------


@dataclass(frozen=True)
class SessionCreated(Event):
    """A session opened."""

    NAME: ClassVar[str] = "SessionCreated"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int
    owner: str
    enclave_id: int
    measurement: bytes
    quorum: int
    max_contributors: int
    min_stake: int
    submit_deadline: int
    training_deadline: int
    reward_pool: int


@dataclass(frozen=True)
class Submitted(Event):
    """A contributor committed a ciphertext with a stake."""

    NAME: ClassVar[str] = "Submitted"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int
    contributor: str
    ciphertext_hash: bytes
    hpke_public_key: bytes
    stake: int


@dataclass(frozen=True)
class QuorumReached(Event):
    """Submissions closed with enough contributors; training may start."""

    NAME: ClassVar[str] = "QuorumReached"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int
    submitted: int


@dataclass(frozen=True)
class SessionFinalized(Event):
    """The enclave recorded the trained model."""

    NAME: ClassVar[str] = "SessionFinalized"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int
    model_hash: bytes
    manifest_hash: bytes
    accepted_count: int
    total_weight: int


@dataclass(frozen=True)
class ContributionAccepted(Event):
    """A contributor was accepted with a weight and got a model token."""

    NAME: ClassVar[str] = "ContributionAccepted"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int
    contributor: str
    weight: int
    token_id: int


@dataclass(frozen=True)
class SessionCancelled(Event):
    """The owner cancelled an open session."""

    NAME: ClassVar[str] = "SessionCancelled"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int


@dataclass(frozen=True)
class SessionExpired(Event):
    """A session ran out of time; ``previous`` is the State it expired from."""

    NAME: ClassVar[str] = "SessionExpired"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int
    previous: int


@dataclass(frozen=True)
class Slashed(Event):
    """A rejected contributor's stake moved to the session pool."""

    NAME: ClassVar[str] = "Slashed"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int
    contributor: str
    reason_code: int
    score: int
    evidence_hash: bytes
    amount: int


@dataclass(frozen=True)
class Claimed(Event):
    """An account withdrew what a session owed it."""

    NAME: ClassVar[str] = "Claimed"
    CONTRACT: ClassVar[str] = "Coordinator"
    session_id: int
    account: str
    amount: int


# --- EnclaveRegistry --------------------------------------------------------------


@dataclass(frozen=True)
class VerifierApproved(Event):
    """The registry admin approved or withdrew an attestation verifier."""

    NAME: ClassVar[str] = "VerifierApproved"
    CONTRACT: ClassVar[str] = "EnclaveRegistry"
    verifier: str
    approved: bool


@dataclass(frozen=True)
class EnclaveRegistered(Event):
    """An enclave's attestation was accepted."""

    NAME: ClassVar[str] = "EnclaveRegistered"
    CONTRACT: ClassVar[str] = "EnclaveRegistry"
    enclave_id: int
    signer: str
    verifier: str
    measurement: bytes
    hpke_public_key: bytes


@dataclass(frozen=True)
class EnclaveRevoked(Event):
    """The registry admin revoked an enclave, and its signer and HPKE key for good."""

    NAME: ClassVar[str] = "EnclaveRevoked"
    CONTRACT: ClassVar[str] = "EnclaveRegistry"
    enclave_id: int
    signer: str
    hpke_key_hash: bytes


@dataclass(frozen=True)
class OwnershipTransferred(Event):
    """The registry admin changed."""

    NAME: ClassVar[str] = "OwnershipTransferred"
    CONTRACT: ClassVar[str] = "EnclaveRegistry"
    previous_owner: str
    new_owner: str


# --- ModelNFT ---------------------------------------------------------------------


@dataclass(frozen=True)
class MinterSet(Event):
    """The model token named its minter (the Coordinator)."""

    NAME: ClassVar[str] = "MinterSet"
    CONTRACT: ClassVar[str] = "ModelNFT"
    minter: str


@dataclass(frozen=True)
class ModelRecorded(Event):
    """A session's encrypted model and manifest were recorded, with its enclave."""

    NAME: ClassVar[str] = "ModelRecorded"
    CONTRACT: ClassVar[str] = "ModelNFT"
    session_id: int
    enclave_id: int
    model_hash: bytes
    manifest_hash: bytes


@dataclass(frozen=True)
class PublishedSealedKey(Event):
    """The model key sealed to a token's holder."""

    NAME: ClassVar[str] = "PublishedSealedKey"
    CONTRACT: ClassVar[str] = "ModelNFT"
    token_id: int
    holder: str
    sealed_key: bytes


@dataclass(frozen=True)
class Transfer(Event):
    """ERC-721 transfer (mint when ``from_`` is the zero address)."""

    NAME: ClassVar[str] = "Transfer"
    CONTRACT: ClassVar[str] = "ModelNFT"
    from_: str
    to: str
    token_id: int


@dataclass(frozen=True)
class Approval(Event):
    """ERC-721 approval of one token."""

    NAME: ClassVar[str] = "Approval"
    CONTRACT: ClassVar[str] = "ModelNFT"
    owner: str
    approved: str
    token_id: int


@dataclass(frozen=True)
class ApprovalForAll(Event):
    """ERC-721 operator approval."""

    NAME: ClassVar[str] = "ApprovalForAll"
    CONTRACT: ClassVar[str] = "ModelNFT"
    owner: str
    operator: str
    approved: bool


# --- DatasetMarket ---------------------------------------------------------------


@dataclass(frozen=True)
class Listed(Event):
    """A publisher listed (or re-priced) a dataset version."""

    NAME: ClassVar[str] = "Listed"
    CONTRACT: ClassVar[str] = "DatasetMarket"
    dataset_key: bytes
    publisher: str
    dataset_id: str
    version: int
    entry_hash: bytes
    price: int


@dataclass(frozen=True)
class Delisted(Event):
    """A publisher stopped selling a dataset version."""

    NAME: ClassVar[str] = "Delisted"
    CONTRACT: ClassVar[str] = "DatasetMarket"
    dataset_key: bytes
    version: int


@dataclass(frozen=True)
class Purchased(Event):
    """The receipt of a dataset version bought."""

    NAME: ClassVar[str] = "Purchased"
    CONTRACT: ClassVar[str] = "DatasetMarket"
    receipt_id: int
    dataset_key: bytes
    buyer: str
    version: int
    entry_hash: bytes
    price: int


@dataclass(frozen=True)
class Withdrawn(Event):
    """A publisher withdrew its proceeds."""

    NAME: ClassVar[str] = "Withdrawn"
    CONTRACT: ClassVar[str] = "DatasetMarket"
    publisher: str
    amount: int


EVENT_TYPES: tuple[type[Event], ...] = (
    SessionCreated,
    Submitted,
    QuorumReached,
    SessionFinalized,
    ContributionAccepted,
    SessionCancelled,
    SessionExpired,
    Slashed,
    Claimed,
    VerifierApproved,
    EnclaveRegistered,
    EnclaveRevoked,
    OwnershipTransferred,
    MinterSet,
    ModelRecorded,
    PublishedSealedKey,
    Transfer,
    Approval,
    ApprovalForAll,
    Listed,
    Delisted,
    Purchased,
    Withdrawn,
)


def snake_case(name: str) -> str:
    """``ciphertextHash`` -> ``ciphertext_hash``; ``from`` -> ``from_`` (a keyword)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    return snake + "_" if snake in {"from"} else snake


@dataclass(frozen=True)
class _EventSpec:
    cls: type[Event]
    indexed: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]


def _build_specs() -> dict[bytes, _EventSpec]:
    specs: dict[bytes, _EventSpec] = {}
    for cls in EVENT_TYPES:
        abi = load_artifact(cls.CONTRACT).abi
        item = next(i for i in abi if i.get("type") == "event" and i["name"] == cls.NAME)
        inputs = item["inputs"]
        signature = f"{cls.NAME}({','.join(i['type'] for i in inputs)})"
        specs[keccak(text=signature)] = _EventSpec(
            cls,
            tuple((snake_case(i["name"]), i["type"]) for i in inputs if i["indexed"]),
            tuple((snake_case(i["name"]), i["type"]) for i in inputs if not i["indexed"]),
        )
    return specs


_SPECS = _build_specs()


def event_topic(cls: type[Event]) -> bytes:
    """topic0 of an event type."""
    return next(topic for topic, spec in _SPECS.items() if spec.cls is cls)


def _normalise(kind: str, value: Any) -> Any:
    if kind == "address":
        return to_checksum_address(value)
    return value


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return bytes(value)


def decode_log(log: Mapping[str, Any]) -> Event | None:
    """The typed event in one log entry, or ``None`` when it is not one of ours."""
    topics = [_as_bytes(t) for t in log["topics"]]
    if not topics or topics[0] not in _SPECS:
        return None
    spec = _SPECS[topics[0]]
    values: dict[str, Any] = {}
    for (name, kind), topic in zip(spec.indexed, topics[1:], strict=True):
        values[name] = _normalise(kind, abi_decode([kind], topic)[0])
    decoded = abi_decode([k for _, k in spec.data], _as_bytes(log["data"]))
    for (name, kind), value in zip(spec.data, decoded, strict=True):
        values[name] = _normalise(kind, value)
    tx_hash = log["transactionHash"]
    return spec.cls(
        address=to_checksum_address(log["address"]),
        block_number=int(log["blockNumber"]),
        log_index=int(log["logIndex"]),
        tx_hash="0x" + _as_bytes(tx_hash).hex() if not isinstance(tx_hash, str) else tx_hash,
        **values,
    )


def decode_logs(logs: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Every cotune event among ``logs``, in their given order."""
    return [event for log in logs if (event := decode_log(log)) is not None]


def event_field_names(cls: type[Event]) -> list[str]:
    """The event's own fields (without the position fields of ``Event``)."""
    base = {f.name for f in fields(Event)}
    return [f.name for f in fields(cls) if f.name not in base]
