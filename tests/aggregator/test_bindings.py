"""HPKE context strings: one chain, coordinator, session and party per ciphertext."""

import itertools
from collections.abc import Callable

import pytest
from eth_account import Account

from cotune.aggregator.bindings import (
    eval_set_info,
    model_info,
    model_key_info,
    submission_info,
)
from cotune.crypto.errors import ContextMismatchError
from cotune.crypto.hpke import HpkePrivateKey
from cotune.crypto.stream import decrypt_bytes, encrypt_bytes

CHAIN = 31337
COORDINATOR = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_COORDINATOR = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"

# each variant changes exactly one input of submission_info
SUBMISSION_VARIANTS = {
    "base": (CHAIN, COORDINATOR, 1, ALICE),
    "chain": (1, COORDINATOR, 1, ALICE),
    "coordinator": (CHAIN, OTHER_COORDINATOR, 1, ALICE),
    "session": (CHAIN, COORDINATOR, 2, ALICE),
    "contributor": (CHAIN, COORDINATOR, 1, BOB),
}


def test_submission_info_differs_in_every_input() -> None:
    infos = {name: submission_info(*args) for name, args in SUBMISSION_VARIANTS.items()}
    assert len(set(infos.values())) == len(infos)


def test_model_key_info_differs_in_every_input() -> None:
    infos = {name: model_key_info(*args) for name, args in SUBMISSION_VARIANTS.items()}
    assert len(set(infos.values())) == len(infos)


def test_model_info_differs_in_every_input() -> None:
    variants = [(CHAIN, COORDINATOR, 1), (1, COORDINATOR, 1), (CHAIN, OTHER_COORDINATOR, 1)]
    variants.append((CHAIN, COORDINATOR, 2))
    assert len({model_info(*args) for args in variants}) == len(variants)


def test_eval_set_info_differs_in_every_input() -> None:
    variants = [(CHAIN, COORDINATOR, ALICE), (1, COORDINATOR, ALICE)]
    variants += [(CHAIN, OTHER_COORDINATOR, ALICE), (CHAIN, COORDINATOR, BOB)]
    assert len({eval_set_info(*args) for args in variants}) == len(variants)


def test_kinds_never_collide() -> None:
    contexts = [
        submission_info(CHAIN, COORDINATOR, 1, ALICE),
        model_key_info(CHAIN, COORDINATOR, 1, ALICE),
        model_info(CHAIN, COORDINATOR, 1),
        eval_set_info(CHAIN, COORDINATOR, ALICE),
    ]
    assert len(set(contexts)) == len(contexts)
    for a, b in itertools.combinations(contexts, 2):
        assert not a.startswith(b)
        assert not b.startswith(a)


def test_context_names_its_parts() -> None:
    info = submission_info(CHAIN, COORDINATOR, 12, ALICE)
    assert isinstance(info, bytes)
    text = info.decode()
    assert text.startswith("cotune/submission/v1|")
    assert f"chain={CHAIN}" in text.split("|")
    assert f"coordinator={COORDINATOR}" in text.split("|")
    assert "session=12" in text.split("|")
    assert f"contributor={ALICE}" in text.split("|")


def _case_variants(address: str) -> list[str]:
    body = address[2:]
    return [address, address.lower(), "0x" + body.upper(), "0X" + body.lower()]


@pytest.mark.parametrize(
    "make",
    [
        lambda c, p: submission_info(CHAIN, c, 1, p),
        lambda c, p: model_key_info(CHAIN, c, 1, p),
        lambda c, p: eval_set_info(CHAIN, c, p),
        lambda c, p: model_info(CHAIN, c, 1),
    ],
    ids=["submission", "model-key", "eval-set", "model"],
)
def test_address_case_does_not_matter(make: Callable[[str, str], bytes]) -> None:
    expected = make(COORDINATOR, ALICE)
    for coordinator, party in itertools.product(_case_variants(COORDINATOR), _case_variants(ALICE)):
        assert make(coordinator, party) == expected
    assert COORDINATOR.encode() in expected  # written checksummed


@pytest.mark.parametrize("bad", ["", "0x12", "not an address", "0x" + "g" * 40])
def test_invalid_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        submission_info(CHAIN, bad, 1, ALICE)
    with pytest.raises(ValueError):
        submission_info(CHAIN, COORDINATOR, 1, bad)


# ---- end to end with the stream cipher ---------------------------------------------------


@pytest.fixture(scope="module")
def enclave_key() -> HpkePrivateKey:
    return HpkePrivateKey.generate()


def test_submission_opens_only_under_its_own_context(enclave_key: HpkePrivateKey) -> None:
    info = submission_info(CHAIN, COORDINATOR, 1, ALICE)
    ciphertext = encrypt_bytes(b"alice's dataset", enclave_key.public_key(), info)
    assert decrypt_bytes(ciphertext, enclave_key, info) == b"alice's dataset"
    # the same context written with another address case still opens it
    same = submission_info(CHAIN, COORDINATOR.lower(), 1, ALICE.lower())
    assert decrypt_bytes(ciphertext, enclave_key, same) == b"alice's dataset"

    for name, args in SUBMISSION_VARIANTS.items():
        if name == "base":
            continue
        with pytest.raises(ContextMismatchError):
            decrypt_bytes(ciphertext, enclave_key, submission_info(*args))


def test_submission_does_not_open_as_another_kind(enclave_key: HpkePrivateKey) -> None:
    info = submission_info(CHAIN, COORDINATOR, 1, ALICE)
    ciphertext = encrypt_bytes(b"data", enclave_key.public_key(), info)
    for other in (
        model_key_info(CHAIN, COORDINATOR, 1, ALICE),
        model_info(CHAIN, COORDINATOR, 1),
        eval_set_info(CHAIN, COORDINATOR, ALICE),
    ):
        with pytest.raises(ContextMismatchError):
            decrypt_bytes(ciphertext, enclave_key, other)


def test_random_contributor_cannot_replay(enclave_key: HpkePrivateKey) -> None:
    info = submission_info(CHAIN, COORDINATOR, 5, ALICE)
    ciphertext = encrypt_bytes(b"x" * 5000, enclave_key.public_key(), info, chunk_size=1024)
    thief = Account.create().address
    with pytest.raises(ContextMismatchError):
        decrypt_bytes(ciphertext, enclave_key, submission_info(CHAIN, COORDINATOR, 5, thief))
    with pytest.raises(ContextMismatchError):
        decrypt_bytes(ciphertext, enclave_key, submission_info(CHAIN, COORDINATOR, 6, ALICE))
