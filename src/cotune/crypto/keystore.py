"""Passphrase-encrypted keystore files for an :class:`Identity`.

One JSON file holds both secrets:

* ``wallet``: a standard Web3 Secret Storage (v3) keystore from eth-account,
  importable by any Ethereum wallet;
* ``hpke``: the HPKE secret encrypted with AES-256-GCM under a key derived
  from the passphrase by scrypt; the address, suite and public key are the
  associated data, so editing them in the file is detected on unlock.

Files are created with mode 0600 and never overwritten by accident; loading a
file that others can read is refused, as ssh does.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from eth_account import Account
from eth_utils.address import to_checksum_address

from cotune.common.atomic import write_bytes_atomic
from cotune.crypto.errors import KeystoreError, WrongPassphraseError
from cotune.crypto.hpke import HpkePrivateKey, HpkePublicKey
from cotune.crypto.identity import Identity, PublicIdentity

KEYSTORE_VERSION: Final = 1
DEFAULT_SCRYPT_N: Final = 1 << 18
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_CIPHER: Final = "aes-256-gcm"


@dataclass(frozen=True)
class KeystoreInfo:
    """The public part of a keystore file, readable without the passphrase."""

    path: Path
    public: PublicIdentity
    file_mode: int


def _derive(passphrase: str, salt: bytes, n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=_SCRYPT_R, p=_SCRYPT_P).derive(
        passphrase.encode("utf-8")
    )


def _aad(public: PublicIdentity) -> bytes:
    return json.dumps(public.to_dict(), sort_keys=True, separators=(",", ":")).encode()


def encode_keystore(
    identity: Identity, passphrase: str, *, scrypt_n: int = DEFAULT_SCRYPT_N
) -> bytes:
    """Serialise ``identity`` encrypted under ``passphrase``."""
    if not passphrase:
        raise KeystoreError("refusing an empty passphrase")
    public = identity.public()
    salt = os.urandom(16)
    nonce = os.urandom(12)
    ciphertext = AESGCM(_derive(passphrase, salt, scrypt_n)).encrypt(
        nonce, identity.hpke.secret_bytes(), _aad(public)
    )
    document = {
        "cotune_keystore": KEYSTORE_VERSION,
        "address": public.address,
        "hpke": {
            "suite": public.hpke_public_key.suite.value,
            "public_key": public.hpke_public_key.to_hex(),
            "crypto": {
                "kdf": "scrypt",
                "kdfparams": {"n": scrypt_n, "r": _SCRYPT_R, "p": _SCRYPT_P, "salt": salt.hex()},
                "cipher": _CIPHER,
                "nonce": nonce.hex(),
                "ciphertext": ciphertext.hex(),
            },
        },
        "wallet": Account.encrypt(identity.account.key, passphrase, iterations=scrypt_n),
    }
    return json.dumps(document, indent=2).encode() + b"\n"


def save_keystore(
    path: Path,
    identity: Identity,
    passphrase: str,
    *,
    overwrite: bool = False,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> Path:
    """Write ``identity`` to ``path`` (mode 0600, atomically); refuses to overwrite by default."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = encode_keystore(identity, passphrase, scrypt_n=scrypt_n)
    try:
        write_bytes_atomic(path, data, mode=0o600, overwrite=overwrite)
    except FileExistsError:
        raise KeystoreError(f"{path} already exists; pass overwrite to replace it") from None
    return path


def _read_document(path: Path) -> tuple[dict[str, Any], int]:
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeystoreError(f"keystore {path} does not exist") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeystoreError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(document, dict) or document.get("cotune_keystore") != KEYSTORE_VERSION:
        raise KeystoreError(
            f"{path}: not a cotune keystore (expected field cotune_keystore = {KEYSTORE_VERSION})"
        )
    return document, mode


def _field(document: dict[str, Any], dotted: str, path: Path) -> Any:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeystoreError(f"{path}: missing field {dotted!r}")
        node = node[part]
    return node


def read_keystore_info(path: Path) -> KeystoreInfo:
    """Read the public half of a keystore; needs no passphrase."""
    path = Path(path)
    document, mode = _read_document(path)
    try:
        public = PublicIdentity(
            to_checksum_address(_field(document, "address", path)),
            HpkePublicKey.from_hex(_field(document, "hpke.public_key", path)),
        )
    except ValueError as exc:
        raise KeystoreError(f"{path}: {exc}") from None
    if public.hpke_public_key.suite.value != _field(document, "hpke.suite", path):
        raise KeystoreError(f"{path}: field 'hpke.suite' does not match the public key")
    return KeystoreInfo(path, public, mode)


def load_keystore(path: Path, passphrase: str) -> Identity:
    """Unlock a keystore file.

    Raises ``KeystoreError`` for a missing, malformed or group/world-readable
    file and ``WrongPassphraseError`` when the passphrase does not unlock it.
    """
    info = read_keystore_info(path)
    if info.file_mode & 0o077:
        raise KeystoreError(
            f"{info.path} has permissions {info.file_mode:04o}, readable by others; "
            f"run: chmod 600 {info.path}"
        )
    document, _ = _read_document(info.path)
    crypto = _field(document, "hpke.crypto", info.path)
    try:
        params = crypto["kdfparams"]
        if crypto["kdf"] != "scrypt" or crypto["cipher"] != _CIPHER:
            raise KeystoreError(f"{info.path}: unsupported kdf or cipher in 'hpke.crypto'")
        key = Scrypt(
            salt=bytes.fromhex(params["salt"]),
            length=32,
            n=int(params["n"]),
            r=int(params["r"]),
            p=int(params["p"]),
        ).derive(passphrase.encode("utf-8"))
        nonce = bytes.fromhex(crypto["nonce"])
        ciphertext = bytes.fromhex(crypto["ciphertext"])
    except (KeyError, TypeError, ValueError) as exc:
        raise KeystoreError(f"{info.path}: malformed field 'hpke.crypto' ({exc})") from None
    try:
        secret = AESGCM(key).decrypt(nonce, ciphertext, _aad(info.public))
    except InvalidTag:
        raise WrongPassphraseError(
            f"wrong passphrase for {info.path} (or its public fields were edited)"
        ) from None
    try:
        wallet_key = Account.decrypt(_field(document, "wallet", info.path), passphrase)
    except ValueError:
        raise WrongPassphraseError(f"wrong passphrase for the wallet in {info.path}") from None
    identity = Identity(
        Account.from_key(wallet_key),
        HpkePrivateKey(info.public.hpke_public_key.suite, secret),
    )
    if identity.public() != info.public:
        raise KeystoreError(f"{info.path}: the stored public fields do not match the secrets")
    return identity
