"""The crypto layer: identities, HPKE sealing, streaming file encryption, keystores, EIP-712.

Knows nothing about chains, storage or training.
"""

from cotune.crypto.eip712 import (
    Eip712Domain,
    recover_typed_data_signer,
    sign_typed_data,
    typed_data,
    typed_data_digest,
    verify_typed_data,
)
from cotune.crypto.errors import (
    ChunkAuthenticationError,
    ChunkOrderError,
    ContextMismatchError,
    CryptoError,
    KeystoreError,
    MalformedCiphertextError,
    SignatureError,
    TrailingDataError,
    TruncatedStreamError,
    WrongKeyError,
    WrongPassphraseError,
)
from cotune.crypto.hpke import HpkePrivateKey, HpkePublicKey, HpkeSuite, seal, unseal
from cotune.crypto.identity import Identity, PublicIdentity
from cotune.crypto.keystore import (
    KeystoreInfo,
    load_keystore,
    read_keystore_info,
    save_keystore,
)
from cotune.crypto.stream import (
    DEFAULT_CHUNK_SIZE,
    decrypt_bytes,
    decrypt_file,
    decrypt_stream_to_path,
    decrypt_stream_unverified,
    encrypt_bytes,
    encrypt_file,
    encrypt_stream,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ChunkAuthenticationError",
    "ChunkOrderError",
    "ContextMismatchError",
    "CryptoError",
    "Eip712Domain",
    "HpkePrivateKey",
    "HpkePublicKey",
    "HpkeSuite",
    "Identity",
    "KeystoreError",
    "KeystoreInfo",
    "MalformedCiphertextError",
    "PublicIdentity",
    "SignatureError",
    "TrailingDataError",
    "TruncatedStreamError",
    "WrongKeyError",
    "WrongPassphraseError",
    "decrypt_bytes",
    "decrypt_file",
    "decrypt_stream_to_path",
    "decrypt_stream_unverified",
    "encrypt_bytes",
    "encrypt_file",
    "encrypt_stream",
    "load_keystore",
    "read_keystore_info",
    "recover_typed_data_signer",
    "save_keystore",
    "seal",
    "sign_typed_data",
    "typed_data",
    "typed_data_digest",
    "unseal",
    "verify_typed_data",
]
