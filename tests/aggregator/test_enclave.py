"""The dev enclave's keys: sealing at rest, decryption and rejection signatures."""

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from eth_account import Account

from cotune.aggregator.enclave import (
    SEALED_FORMAT,
    EnclaveKeyError,
    EnclaveKeys,
    load_or_create_keys,
)
from cotune.chain.statements import RejectionCertificate, coordinator_domain
from cotune.crypto.errors import ContextMismatchError
from cotune.crypto.hpke import HpkeSuite
from cotune.crypto.stream import encrypt_bytes

SECRET = "correct horse battery staple"
COORDINATOR = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


@pytest.fixture(scope="module")
def keys() -> EnclaveKeys:
    return EnclaveKeys.generate()


@pytest.fixture(scope="module")
def sealed(keys: EnclaveKeys) -> bytes:
    return keys.seal(SECRET)


def _signer_hex(keys: EnclaveKeys) -> str:
    return bytes(keys.account.key).hex()


def _hpke_hex(keys: EnclaveKeys) -> str:
    return keys._hpke.secret_bytes().hex()


def _edit(sealed: bytes, **changes: str) -> bytes:
    document = json.loads(sealed)
    document.update(changes)
    return json.dumps(document).encode()


def _flip_hex(text: str, index: int) -> str:
    flipped = "1" if text[index] != "1" else "2"
    return text[:index] + flipped + text[index + 1 :]


# ---- sealing round trip ------------------------------------------------------------------


def test_unseal_restores_the_same_identity(keys: EnclaveKeys, sealed: bytes) -> None:
    opened = EnclaveKeys.unseal(sealed, SECRET)
    assert opened.public == keys.public
    assert opened.public.signer == keys.account.address
    assert opened.public.hpke_public_key == keys.public.hpke_public_key
    assert _signer_hex(opened) == _signer_hex(keys)
    assert _hpke_hex(opened) == _hpke_hex(keys)


def test_round_trip_with_the_post_quantum_suite() -> None:
    keys = EnclaveKeys.generate(HpkeSuite.MLKEM768_X25519)
    opened = EnclaveKeys.unseal(keys.seal(SECRET), SECRET)
    assert opened.public == keys.public
    assert opened.public.hpke_public_key.suite is HpkeSuite.MLKEM768_X25519


def test_sealing_twice_uses_fresh_salt_and_nonce(keys: EnclaveKeys, sealed: bytes) -> None:
    again = keys.seal(SECRET)
    first, second = json.loads(sealed), json.loads(again)
    assert first["salt"] != second["salt"]
    assert first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]
    assert EnclaveKeys.unseal(again, SECRET).public == keys.public


def test_sealed_document_shows_only_public_fields_in_clear(
    keys: EnclaveKeys, sealed: bytes
) -> None:
    document = json.loads(sealed)
    assert document["format"] == SEALED_FORMAT
    assert document["signer"] == keys.public.signer
    assert document["hpke_public_key"] == keys.public.hpke_public_key.to_hex()
    assert set(document) == {"format", "signer", "hpke_public_key", "salt", "nonce", "ciphertext"}


def test_sealed_file_holds_no_secret_in_clear(keys: EnclaveKeys, sealed: bytes) -> None:
    text = sealed.decode().lower()
    signer_secret = _signer_hex(keys)
    hpke_secret = _hpke_hex(keys)
    assert signer_secret not in text
    assert hpke_secret not in text
    # nor the raw bytes
    assert bytes(keys.account.key) not in sealed
    assert keys._hpke.secret_bytes() not in sealed


# ---- refusing damaged or foreign files ---------------------------------------------------


def test_wrong_operator_secret_is_refused(sealed: bytes) -> None:
    with pytest.raises(EnclaveKeyError):
        EnclaveKeys.unseal(sealed, SECRET + "!")


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "salt"])
@pytest.mark.parametrize("index", [0, -1])
def test_flipped_hex_char_is_refused(sealed: bytes, field: str, index: int) -> None:
    document = json.loads(sealed)
    position = index % len(document[field])
    tampered = _edit(sealed, **{field: _flip_hex(document[field], position)})
    with pytest.raises(EnclaveKeyError):
        EnclaveKeys.unseal(tampered, SECRET)


def test_changed_public_signer_is_refused(sealed: bytes) -> None:
    other = Account.create().address
    with pytest.raises(EnclaveKeyError):
        EnclaveKeys.unseal(_edit(sealed, signer=other), SECRET)


def test_lower_cased_public_signer_is_refused(keys: EnclaveKeys, sealed: bytes) -> None:
    with pytest.raises(EnclaveKeyError):
        EnclaveKeys.unseal(_edit(sealed, signer=keys.public.signer.lower()), SECRET)


def test_changed_public_hpke_key_is_refused(sealed: bytes) -> None:
    other = EnclaveKeys.generate().public.hpke_public_key.to_hex()
    with pytest.raises(EnclaveKeyError):
        EnclaveKeys.unseal(_edit(sealed, hpke_public_key=other), SECRET)


@pytest.mark.parametrize("fmt", ["cotune-enclave-sealed/2", "", "something else"])
def test_wrong_format_is_refused(sealed: bytes, fmt: str) -> None:
    with pytest.raises(EnclaveKeyError, match="not a sealed enclave key file"):
        EnclaveKeys.unseal(_edit(sealed, format=fmt), SECRET)


@pytest.mark.parametrize("missing", ["format", "signer", "hpke_public_key", "salt", "nonce"])
def test_missing_field_is_refused(sealed: bytes, missing: str) -> None:
    document = json.loads(sealed)
    del document[missing]
    with pytest.raises(EnclaveKeyError):
        EnclaveKeys.unseal(json.dumps(document).encode(), SECRET)


@pytest.mark.parametrize(
    "blob", [b"", b"not json", b"[]", b"{}", b'"string"', b"\xff\xfe", b'{"format": 1}']
)
def test_garbage_is_refused(blob: bytes) -> None:
    with pytest.raises(EnclaveKeyError):
        EnclaveKeys.unseal(blob, SECRET)


def test_truncated_file_is_refused(sealed: bytes) -> None:
    with pytest.raises(EnclaveKeyError):
        EnclaveKeys.unseal(sealed[: len(sealed) // 2], SECRET)


def test_keys_that_do_not_match_their_public_fields_are_refused() -> None:
    """A well-encrypted file whose secrets belong to another identity than it shows."""
    inside, shown = EnclaveKeys.generate(), EnclaveKeys.generate()
    header = {"format": SEALED_FORMAT, **shown.public.to_dict()}
    salt, nonce = os.urandom(16), os.urandom(12)
    key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(SECRET.encode())
    secret = json.dumps({"signer": _signer_hex(inside), "hpke": _hpke_hex(inside)}).encode()
    body = AESGCM(key).encrypt(nonce, secret, json.dumps(header, sort_keys=True).encode())
    document = header | {"salt": salt.hex(), "nonce": nonce.hex(), "ciphertext": body.hex()}
    with pytest.raises(EnclaveKeyError, match="do not match"):
        EnclaveKeys.unseal(json.dumps(document).encode(), SECRET)


def test_empty_secret_is_refused(keys: EnclaveKeys, sealed: bytes) -> None:
    with pytest.raises(EnclaveKeyError, match="empty"):
        keys.seal("")
    with pytest.raises(EnclaveKeyError, match="empty"):
        EnclaveKeys.unseal(sealed, "")


# ---- load_or_create_keys -----------------------------------------------------------------


def test_load_or_create_makes_a_private_file_and_keeps_identity(tmp_path: Path) -> None:
    path = tmp_path / "state" / "enclave.sealed"
    created = load_or_create_keys(path, SECRET)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()

    loaded = load_or_create_keys(path, SECRET)
    assert loaded.public == created.public
    assert _signer_hex(loaded) == _signer_hex(created)
    assert _hpke_hex(loaded) == _hpke_hex(created)
    assert path.read_bytes() == before  # opened, not rewritten


def test_load_with_wrong_secret_does_not_replace_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "enclave.sealed"
    created = load_or_create_keys(path, SECRET)
    before = path.read_bytes()
    with pytest.raises(EnclaveKeyError):
        load_or_create_keys(path, "another secret")
    assert path.read_bytes() == before
    assert load_or_create_keys(path, SECRET).public == created.public


def test_load_or_create_with_empty_secret_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "enclave.sealed"
    with pytest.raises(EnclaveKeyError):
        load_or_create_keys(path, "")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_two_fresh_enclaves_differ(tmp_path: Path) -> None:
    first = load_or_create_keys(tmp_path / "a", SECRET)
    second = load_or_create_keys(tmp_path / "b", SECRET)
    assert first.public.signer != second.public.signer
    assert first.public.hpke_public_key != second.public.hpke_public_key


# ---- no secret in repr -------------------------------------------------------------------


def test_repr_shows_no_secret(keys: EnclaveKeys) -> None:
    for text in (repr(keys), str(keys), repr(keys.public), str(keys.public.to_dict())):
        lowered = text.lower()
        assert _signer_hex(keys) not in lowered
        assert _hpke_hex(keys) not in lowered
    assert keys.public.signer in repr(keys)


def test_public_to_dict(keys: EnclaveKeys) -> None:
    assert keys.public.to_dict() == {
        "signer": keys.account.address,
        "hpke_public_key": keys.public.hpke_public_key.to_hex(),
    }
    json.dumps(keys.public.to_dict())


# ---- operations --------------------------------------------------------------------------


def test_decrypt_opens_a_ciphertext_made_for_the_enclave(keys: EnclaveKeys) -> None:
    info = b"cotune/test/v1|session=1"
    plaintext = os.urandom(3000)
    ciphertext = encrypt_bytes(plaintext, keys.public.hpke_public_key, info, chunk_size=1024)
    assert keys.decrypt(ciphertext, info) == plaintext
    # the unsealed copy opens it too
    assert EnclaveKeys.unseal(keys.seal(SECRET), SECRET).decrypt(ciphertext, info) == plaintext


def test_decrypt_under_another_context_fails(keys: EnclaveKeys) -> None:
    ciphertext = encrypt_bytes(b"payload", keys.public.hpke_public_key, b"context-a")
    with pytest.raises(ContextMismatchError):
        keys.decrypt(ciphertext, b"context-b")


def test_sign_rejection_recovers_to_the_enclave_signer(keys: EnclaveKeys) -> None:
    domain = coordinator_domain(31337, COORDINATOR)
    certificate = RejectionCertificate(
        session_id=7,
        contributor=Account.create().address,
        ciphertext_hash=b"\x11" * 32,
        reason_code=3,
        score=250_000,
        evidence_hash=b"\x22" * 32,
    )
    signature = keys.sign_rejection(certificate, domain)
    assert certificate.recover(domain, signature) == keys.public.signer
    # bound to the domain and to the certificate's content
    other_domain = coordinator_domain(1, COORDINATOR)
    assert certificate.recover(other_domain, signature) != keys.public.signer
    changed = RejectionCertificate(
        8,
        certificate.contributor,
        certificate.ciphertext_hash,
        certificate.reason_code,
        certificate.score,
        certificate.evidence_hash,
    )
    assert changed.recover(domain, signature) != keys.public.signer
