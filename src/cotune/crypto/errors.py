"""Exceptions of the crypto layer: one class per way a ciphertext or key can be wrong."""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by :mod:`cotune.crypto`."""


class MalformedCiphertextError(CryptoError):
    """The bytes are not a cotune ciphertext: bad magic, version, suite or length."""


class WrongKeyError(CryptoError):
    """The ciphertext was sealed to a different recipient key than the one supplied."""


class ContextMismatchError(CryptoError):
    """The right key, but the ``info`` context differs from the one it was sealed under.

    This is what a ciphertext replayed into another chain, contract, session or
    contributor looks like; an altered sealed-key field looks the same.
    """


class TruncatedStreamError(CryptoError):
    """The encrypted stream ended before its final chunk."""


class TrailingDataError(CryptoError):
    """Bytes follow the final chunk: a chunk or garbage was appended."""


class ChunkOrderError(CryptoError):
    """A chunk is authentic but sits at the wrong position: reordered or duplicated."""


class ChunkAuthenticationError(CryptoError):
    """A chunk fails authentication at every position.

    Causes: a flipped bit, a chunk spliced in from another stream, or an altered
    header (every chunk authenticates the header).
    """


class KeystoreError(CryptoError):
    """A keystore file is missing, malformed or unsafe."""


class WrongPassphraseError(KeystoreError):
    """The passphrase does not unlock the keystore."""


class SignatureError(CryptoError):
    """A typed-data signature is malformed or does not recover."""
