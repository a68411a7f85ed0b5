"""HPKE keys and small-message sealing, for both suites."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cotune.crypto import (
    ContextMismatchError,
    HpkePrivateKey,
    HpkePublicKey,
    HpkeSuite,
    MalformedCiphertextError,
    WrongKeyError,
    seal,
    unseal,
)

SUITES = list(HpkeSuite)
KEYS = {suite: HpkePrivateKey.generate(suite) for suite in SUITES}


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.value)
@given(plaintext=st.binary(max_size=2048), info=st.binary(max_size=128))
def test_seal_round_trip(suite: HpkeSuite, plaintext: bytes, info: bytes) -> None:
    key = KEYS[suite]
    sealed = seal(plaintext, key.public_key(), info)
    assert unseal(sealed, key, info) == plaintext


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.value)
def test_seal_is_randomised(suite: HpkeSuite) -> None:
    key = KEYS[suite]
    assert seal(b"m", key.public_key(), b"i") != seal(b"m", key.public_key(), b"i")


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.value)
def test_wrong_info_is_context_mismatch(suite: HpkeSuite) -> None:
    key = KEYS[suite]
    sealed = seal(b"secret", key.public_key(), b"chain=1|session=7|contributor=0xA")
    with pytest.raises(ContextMismatchError):
        unseal(sealed, key, b"chain=1|session=8|contributor=0xA")


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.value)
def test_wrong_key_same_suite(suite: HpkeSuite) -> None:
    sealed = seal(b"secret", KEYS[suite].public_key(), b"i")
    with pytest.raises(WrongKeyError, match="not to this key"):
        unseal(sealed, HpkePrivateKey.generate(suite), b"i")


def test_wrong_key_other_suite() -> None:
    sealed = seal(b"secret", KEYS[HpkeSuite.MLKEM768_X25519].public_key(), b"i")
    with pytest.raises(WrongKeyError, match="mlkem768-x25519"):
        unseal(sealed, KEYS[HpkeSuite.X25519], b"i")


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.value)
def test_tampered_body_fails(suite: HpkeSuite) -> None:
    key = KEYS[suite]
    sealed = bytearray(seal(b"secret", key.public_key(), b"i"))
    sealed[-1] ^= 1
    with pytest.raises(ContextMismatchError):
        unseal(bytes(sealed), key, b"i")


def test_malformed_sealed_messages() -> None:
    key = KEYS[HpkeSuite.X25519]
    good = seal(b"secret", key.public_key(), b"i")
    with pytest.raises(MalformedCiphertextError, match="too short"):
        unseal(good[:20], key, b"i")
    with pytest.raises(MalformedCiphertextError, match="version"):
        unseal(b"\x09" + good[1:], key, b"i")
    with pytest.raises(MalformedCiphertextError, match="KEM id"):
        unseal(good[:1] + b"\x99\x99" + good[3:], key, b"i")


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.value)
def test_public_key_serialisation(suite: HpkeSuite) -> None:
    public = KEYS[suite].public_key()
    assert HpkePublicKey.from_bytes(public.to_bytes()) == public
    assert HpkePublicKey.from_hex(public.to_hex()) == public
    assert len(public.to_bytes()) == 2 + suite.public_key_size


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.value)
def test_private_key_from_secret_is_same_key(suite: HpkeSuite) -> None:
    key = KEYS[suite]
    again = HpkePrivateKey(suite, key.secret_bytes())
    assert again.public_key() == key.public_key()
    assert unseal(seal(b"x", key.public_key(), b"i"), again, b"i") == b"x"


def test_public_key_parse_errors() -> None:
    with pytest.raises(ValueError, match="KEM id"):
        HpkePublicKey.from_bytes(b"\x00")
    with pytest.raises(ValueError, match="unsupported"):
        HpkePublicKey.from_bytes(b"\x12\x34" + bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        HpkePublicKey.from_bytes(b"\x00\x20" + bytes(31))
    with pytest.raises(ValueError, match="hex"):
        HpkePublicKey.from_hex("0xzz")


def test_private_key_secret_length_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        HpkePrivateKey(HpkeSuite.X25519, bytes(31))
    with pytest.raises(ValueError, match="96 bytes"):
        HpkePrivateKey(HpkeSuite.MLKEM768_X25519, bytes(32))


def test_repr_does_not_leak_secret() -> None:
    key = KEYS[HpkeSuite.X25519]
    assert key.secret_bytes().hex() not in repr(key)
