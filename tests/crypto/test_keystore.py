"""Keystore files: round trips, permissions, and a clear error for every bad input."""

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from cotune.crypto import (
    HpkeSuite,
    Identity,
    KeystoreError,
    WrongPassphraseError,
    load_keystore,
    read_keystore_info,
    save_keystore,
    seal,
    unseal,
)

FAST_N = 1 << 12  # test-only scrypt cost; files made here are throwaway


def _save(path: Path, identity: Identity, passphrase: str = "correct horse") -> Path:
    return save_keystore(path, identity, passphrase, scrypt_n=FAST_N)


@pytest.mark.parametrize("suite", list(HpkeSuite), ids=lambda s: s.value)
def test_round_trip(tmp_path: Path, suite: HpkeSuite) -> None:
    identity = Identity.generate(suite)
    path = _save(tmp_path / "alice.json", identity)
    loaded = load_keystore(path, "correct horse")
    assert loaded.address == identity.address
    assert loaded.account.key == identity.account.key
    assert loaded.hpke.public_key() == identity.hpke.public_key()
    assert unseal(seal(b"m", identity.hpke.public_key(), b"i"), loaded.hpke, b"i") == b"m"


def test_file_mode_is_0600(tmp_path: Path) -> None:
    path = _save(tmp_path / "keys" / "alice.json", Identity.generate())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_keystore_info(path).file_mode == 0o600


def test_wallet_is_a_standard_v3_keystore(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = _save(tmp_path / "alice.json", identity)
    wallet = json.loads(path.read_text())["wallet"]
    assert wallet["version"] == 3
    assert Account.decrypt(wallet, "correct horse") == identity.account.key


def test_secrets_not_in_file(tmp_path: Path) -> None:
    identity = Identity.generate()
    text = _save(tmp_path / "alice.json", identity).read_text()
    assert identity.account.key.hex().removeprefix("0x") not in text
    assert identity.hpke.secret_bytes().hex() not in text


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = _save(tmp_path / "alice.json", Identity.generate())
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        load_keystore(path, "Correct horse")


def test_refuses_overwrite(tmp_path: Path) -> None:
    path = _save(tmp_path / "alice.json", Identity.generate())
    before = path.read_bytes()
    with pytest.raises(KeystoreError, match="already exists"):
        _save(path, Identity.generate())
    assert path.read_bytes() == before
    replacement = Identity.generate()
    save_keystore(path, replacement, "pw", overwrite=True, scrypt_n=FAST_N)
    assert load_keystore(path, "pw").address == replacement.address


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="empty passphrase"):
        save_keystore(tmp_path / "a.json", Identity.generate(), "", scrypt_n=FAST_N)
    assert not (tmp_path / "a.json").exists()


def test_readable_by_others_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "alice.json", Identity.generate())
    path.chmod(0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_keystore(path, "correct horse")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="does not exist"):
        load_keystore(tmp_path / "nope.json", "pw")


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "cotune_keystore": 1,\n  oops\n}')
    path.chmod(0o600)
    with pytest.raises(KeystoreError, match="line 3"):
        load_keystore(path, "pw")


def test_not_a_cotune_keystore(tmp_path: Path) -> None:
    path = tmp_path / "geth.json"
    path.write_text(json.dumps(Account.encrypt(Account.create().key, "pw", iterations=FAST_N)))
    path.chmod(0o600)
    with pytest.raises(KeystoreError, match="not a cotune keystore"):
        load_keystore(path, "pw")


def test_missing_field(tmp_path: Path) -> None:
    path = _save(tmp_path / "alice.json", Identity.generate())
    document = json.loads(path.read_text())
    del document["hpke"]["public_key"]
    path.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match=r"'hpke\.public_key'"):
        load_keystore(path, "correct horse")


def test_swapped_public_key_detected(tmp_path: Path) -> None:
    path = _save(tmp_path / "alice.json", Identity.generate())
    document = json.loads(path.read_text())
    document["hpke"]["public_key"] = Identity.generate().hpke.public_key().to_hex()
    path.write_text(json.dumps(document))
    with pytest.raises(WrongPassphraseError, match="edited"):
        load_keystore(path, "correct horse")


def test_mismatched_suite_field(tmp_path: Path) -> None:
    path = _save(tmp_path / "alice.json", Identity.generate())
    document = json.loads(path.read_text())
    document["hpke"]["suite"] = "mlkem768-x25519"
    path.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match=r"hpke\.suite"):
        read_keystore_info(path)
