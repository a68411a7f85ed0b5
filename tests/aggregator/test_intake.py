"""Taking in one submission: each fault its author controls is a reason, outages are not."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import BinaryIO

import pytest
from eth_account import Account

from cotune.aggregator.bindings import (
    commitment_salt_info,
    dataset_commitment,
    derive_salt,
    submission_info,
)
from cotune.aggregator.enclave import EnclaveKeys
from cotune.aggregator.faults import InfrastructureError
from cotune.aggregator.intake import Intake, Opened, Refused
from cotune.aggregator.limits import max_ciphertext_bytes
from cotune.chain.events import Submitted
from cotune.crypto.hpke import HpkePrivateKey, HpkeSuite
from cotune.crypto.stream import StreamHeader, encrypt_bytes
from cotune.dataset.provenance import SUBMISSION_MAGIC, wrap_submission
from cotune.storage.blob import BlobRef
from cotune.storage.errors import StorageError
from cotune.storage.local import LocalStore
from cotune.training.rules import GateRules, Reason

CHAIN_ID = 31337
COORDINATOR = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
SESSION = 7
DATA = b'{"text": "hello"}\n'
GOOD_KEY = HpkePrivateKey.generate().public_key().to_bytes()


@pytest.fixture(scope="module")
def keys() -> EnclaveKeys:
    return EnclaveKeys.generate()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def intake(store: LocalStore, keys: EnclaveKeys, rules: GateRules | None = None) -> Intake:
    return Intake(
        store,
        keys,
        chain_id=CHAIN_ID,
        coordinator=COORDINATOR,
        session_id=SESSION,
        rules=rules or GateRules(),
    )


def submitted(digest: bytes, key: bytes = GOOD_KEY, who: str | None = None) -> Submitted:
    contributor = who or str(Account.create().address)
    return Submitted(COORDINATOR, 1, 0, "0x00", SESSION, contributor, digest, key, 1)


def upload(store: LocalStore, keys: EnclaveKeys, plaintext: bytes, who: str) -> bytes:
    info = submission_info(CHAIN_ID, COORDINATOR, SESSION, who)
    return store.put(encrypt_bytes(plaintext, keys.public.hpke_public_key, info)).digest


def take(store: LocalStore, keys: EnclaveKeys, plaintext: bytes, **kw: bytes) -> Opened | Refused:
    who = str(Account.create().address)
    return intake(store, keys).take(submitted(upload(store, keys, plaintext, who), who=who, **kw))


def test_a_good_submission_opens_with_its_salted_commitment(
    store: LocalStore, keys: EnclaveKeys
) -> None:
    salt = os.urandom(32)
    opened = take(store, keys, wrap_submission(DATA, [], salt=salt))
    assert isinstance(opened, Opened)
    assert (opened.data, opened.claim, opened.commitment) == (
        DATA,
        None,
        dataset_commitment(salt, DATA),
    )


def test_without_a_salt_the_enclave_salts_with_its_own_secret(
    store: LocalStore, keys: EnclaveKeys
) -> None:
    who = str(Account.create().address)
    digest = upload(store, keys, DATA, who)
    first = intake(store, keys).take(submitted(digest, who=who))
    again = intake(store, keys).take(submitted(digest, who=who))
    assert isinstance(first, Opened) and isinstance(again, Opened)
    assert first.commitment == again.commitment  # a redo after a crash says the same
    public_guess = dataset_commitment(
        derive_salt(b"", commitment_salt_info(CHAIN_ID, COORDINATOR, SESSION, who)), DATA
    )
    assert first.commitment != public_guess


@pytest.mark.parametrize(
    "key",
    [
        b"\x00\x20" + bytes(32),  # the all-zero X25519 point
        b"\x00\x20" + (1).to_bytes(32, "little"),  # a small-order point
        b"\x00\x20" + bytes(31),  # a wrong length
        b"\x64\x7a" + b"\xff" * HpkeSuite.MLKEM768_X25519.public_key_size,  # not ML-KEM
        b"\x12\x34" + bytes(32),  # an unknown KEM
    ],
    ids=["zero", "small-order", "short", "bad-mlkem", "unknown-kem"],
)
def test_an_unusable_key_rejects_its_author(
    store: LocalStore, keys: EnclaveKeys, key: bytes
) -> None:
    refused = take(store, keys, DATA, key=key)
    assert isinstance(refused, Refused)
    assert refused.reason is Reason.UNUSABLE_KEY
    assert "the committed HPKE public key" in refused.error


def test_a_ciphertext_over_the_cap_is_refused_from_its_size_alone(
    store: LocalStore, keys: EnclaveKeys
) -> None:
    rules = GateRules(max_contribution_bytes=1000)
    cap = max_ciphertext_bytes(1000)
    digest = store.put(os.urandom(cap + 1)).digest

    class NoReads(LocalStore):
        def open(self, ref: BlobRef) -> BinaryIO:
            raise AssertionError("an over-cap blob was fetched")

    refused = intake(NoReads(store.root), keys, rules).take(submitted(digest))
    assert isinstance(refused, Refused)
    assert refused.reason is Reason.TOO_LARGE
    assert f"over the cap of {cap:,}" in refused.error


@pytest.mark.parametrize("case", ["absent", "corrupt", "other-session", "garbage", "huge-header"])
def test_what_the_uploader_controls_is_unreadable_or_provenance(
    store: LocalStore, keys: EnclaveKeys, case: str
) -> None:
    who = str(Account.create().address)
    if case == "absent":
        digest = os.urandom(32)
    elif case == "garbage":
        digest = store.put(b"not a ciphertext").digest
    else:
        digest = upload(store, keys, DATA, who)
    if case == "corrupt":
        path = store.path_of(digest.hex())
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    if case == "other-session":
        info = submission_info(CHAIN_ID, COORDINATOR, SESSION + 1, who)
        digest = store.put(encrypt_bytes(DATA, keys.public.hpke_public_key, info)).digest
    if case == "huge-header":
        header = b'{"provenance": [], "n": ' + b"9" * 5000 + b"}\n"
        digest = upload(store, keys, SUBMISSION_MAGIC + header + DATA, who)
    refused = intake(store, keys).take(submitted(digest, who=who))
    assert isinstance(refused, Refused)
    expected = Reason.PROVENANCE if case == "huge-header" else Reason.UNREADABLE
    assert refused.reason is expected, refused.error
    assert refused.slash is (case != "corrupt")  # changed at rest: maybe not the uploader


def test_a_header_claiming_a_billion_chunks_is_refused_at_once(
    store: LocalStore, keys: EnclaveKeys
) -> None:
    who = str(Account.create().address)
    info = submission_info(CHAIN_ID, COORDINATOR, SESSION, who)
    header = StreamHeader.build(keys.public.hpke_public_key, os.urandom(32), info, 1, 1 << 30)
    digest = store.put(header.raw + os.urandom(17)).digest
    refused = intake(store, keys).take(submitted(digest, who=who))
    assert isinstance(refused, Refused)
    assert refused.reason is Reason.UNREADABLE
    assert refused.error.startswith("TruncatedStreamError: stream ends in chunk 1 of 1073741824")


class FlakyStore(LocalStore):
    """A store whose reads fail the way an unreachable backend does."""

    def __init__(self, root: Path, failure: Exception) -> None:
        super().__init__(root)
        self.failure = failure

    def open(self, ref: BlobRef) -> BinaryIO:
        raise self.failure


@pytest.mark.parametrize(
    "failure",
    [StorageError("S3 download failed: SlowDown"), ConnectionResetError(104, "reset"), OSError(5)],
    ids=["storage", "connection", "io"],
)
def test_an_outage_is_nobodys_fault(
    store: LocalStore, keys: EnclaveKeys, failure: Exception
) -> None:
    who = str(Account.create().address)
    digest = upload(store, keys, DATA, who)
    with pytest.raises(InfrastructureError):
        intake(FlakyStore(store.root, failure), keys).take(submitted(digest, who=who))


def test_the_eval_of_a_submission_never_reads_more_than_it_holds(
    store: LocalStore, keys: EnclaveKeys
) -> None:
    # The envelope's own JSON cannot smuggle an unbounded object in.
    header = json.dumps({"provenance": [], "commitment_salt": "ab" * 32}).encode()
    opened = take(store, keys, SUBMISSION_MAGIC + header + b"\n" + DATA)
    assert isinstance(opened, Opened)
    assert opened.commitment == dataset_commitment(bytes.fromhex("ab" * 32), DATA)
    assert io.BytesIO(opened.data).read() == DATA
