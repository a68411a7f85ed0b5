"""Streaming file encryption with flat memory (the STREAM construction).

Layout of an encrypted stream::

    header:
      magic "CTUN" | version (1) | KEM id (2) | KDF id (2) | HPKE AEAD id (2)
      | stream AEAD id (1) | chunk size (4) | plaintext length (8)
      | recipient fingerprint (8) | sealed-key length (2) | sealed file key
    chunks:
      AES-256-GCM(file key, nonce = 0^7 | counter (4) | last flag (1),
                  aad = SHA-256(header)) of ``chunk size`` plaintext bytes each,
      the last one shorter (or empty for an empty file) and flagged.

The 32-byte file key is fresh per stream and HPKE-sealed to the recipient under
``info``. The header is authenticated by every chunk. Because the header states
the plaintext length, truncation and appended data are detected exactly: when the
source's size is known (a file, an in-memory blob), before any chunk is decrypted,
so a tiny blob claiming billions of chunks costs nothing. A chunk that fails to
authenticate is tried at the nearby positions (at most ``DIAGNOSIS_DISTANCE`` either
way) to tell a reordered chunk from a corrupted one.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cotune.common.atomic import atomic_writer
from cotune.common.progress import Progress, no_progress
from cotune.crypto.errors import (
    ChunkAuthenticationError,
    ChunkOrderError,
    MalformedCiphertextError,
    TrailingDataError,
    TruncatedStreamError,
    WrongKeyError,
)
from cotune.crypto.hpke import (
    AEAD_ID_AES_256_GCM,
    FINGERPRINT_SIZE,
    KDF_ID_HKDF_SHA256,
    HpkePrivateKey,
    HpkePublicKey,
    HpkeSuite,
    seal,
    unseal,
)

MAGIC: Final = b"CTUN"
FORMAT_VERSION: Final = 1
STREAM_AEAD_AES_256_GCM: Final = 1
DEFAULT_CHUNK_SIZE: Final = 1 << 20
MAX_CHUNK_SIZE: Final = 1 << 26
TAG_SIZE: Final = 16
DIAGNOSIS_DISTANCE: Final = 32
"""How far either way a chunk that fails to authenticate is looked for (bounded work)."""
_MAX_CHUNKS: Final = 1 << 32
_FIXED = struct.Struct(f">4sBHHHBIQ{FINGERPRINT_SIZE}sH")
_KEY_SIZE: Final = 32


def _bound_info(info: bytes, fixed_header: bytes) -> bytes:
    # Sealing the file key under the fixed header fields authenticates them before any
    # length or chunk count from the header is trusted.
    return info + b"|cotune-stream-header=" + hashlib.sha256(fixed_header).digest()


def _sealed_key_length(suite: HpkeSuite) -> int:
    # version (1) + KEM id (2) + fingerprint, then enc, the key and the AEAD tag
    return 3 + FINGERPRINT_SIZE + suite.enc_size + _KEY_SIZE + TAG_SIZE


def _nonce(counter: int, last: bool) -> bytes:
    return bytes(7) + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def chunk_count(plaintext_length: int, chunk_size: int) -> int:
    """Number of chunks for a plaintext: at least one, so an empty file has a final chunk."""
    return max(1, -(-plaintext_length // chunk_size))


def ciphertext_length(plaintext_length: int, chunk_size: int, header_length: int) -> int:
    """Exact size of the encrypted stream for a plaintext of ``plaintext_length`` bytes."""
    return header_length + plaintext_length + TAG_SIZE * chunk_count(plaintext_length, chunk_size)


@dataclass(frozen=True)
class StreamHeader:
    """The parsed header of an encrypted stream."""

    suite: HpkeSuite
    chunk_size: int
    plaintext_length: int
    recipient_fingerprint: bytes
    sealed_key: bytes
    raw: bytes

    @property
    def chunks(self) -> int:
        """How many chunks follow the header."""
        return chunk_count(self.plaintext_length, self.chunk_size)

    def chunk_plaintext_size(self, index: int) -> int:
        """Plaintext bytes in chunk ``index``."""
        if index < self.chunks - 1:
            return self.chunk_size
        return self.plaintext_length - self.chunk_size * (self.chunks - 1)

    @classmethod
    def build(
        cls,
        recipient: HpkePublicKey,
        file_key: bytes,
        info: bytes,
        chunk_size: int,
        plaintext_length: int,
    ) -> StreamHeader:
        """Serialise a header for a new stream, sealing ``file_key`` to ``recipient``."""
        fixed = _FIXED.pack(
            MAGIC,
            FORMAT_VERSION,
            recipient.suite.kem_id,
            KDF_ID_HKDF_SHA256,
            AEAD_ID_AES_256_GCM,
            STREAM_AEAD_AES_256_GCM,
            chunk_size,
            plaintext_length,
            recipient.fingerprint(),
            _sealed_key_length(recipient.suite),
        )
        sealed_key = seal(file_key, recipient, _bound_info(info, fixed))
        raw = fixed + sealed_key
        return cls(
            recipient.suite, chunk_size, plaintext_length, recipient.fingerprint(), sealed_key, raw
        )

    @classmethod
    def read(cls, source: BinaryIO) -> StreamHeader:
        """Read and validate a header from the start of ``source``."""
        fixed = _read_exact(source, _FIXED.size)
        if len(fixed) < _FIXED.size:
            if len(fixed) >= 4 and fixed[:4] != MAGIC:
                raise MalformedCiphertextError("not a cotune ciphertext (bad magic)")
            raise TruncatedStreamError(
                f"stream ends inside the header ({len(fixed)} of {_FIXED.size} bytes)"
            )
        (magic, version, kem_id, kdf_id, aead_id, stream_aead, chunk_size, length, fp, n) = (
            _FIXED.unpack(fixed)
        )
        if magic != MAGIC:
            raise MalformedCiphertextError("not a cotune ciphertext (bad magic)")
        if version != FORMAT_VERSION:
            raise MalformedCiphertextError(f"unsupported ciphertext format version {version}")
        suite = HpkeSuite.from_kem_id(kem_id)
        if (kdf_id, aead_id, stream_aead) != (
            KDF_ID_HKDF_SHA256,
            AEAD_ID_AES_256_GCM,
            STREAM_AEAD_AES_256_GCM,
        ):
            raise MalformedCiphertextError(
                f"unsupported suite ids kdf=0x{kdf_id:04x} aead=0x{aead_id:04x} "
                f"stream=0x{stream_aead:02x}"
            )
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise MalformedCiphertextError(f"chunk size {chunk_size} out of range")
        if chunk_count(length, chunk_size) > _MAX_CHUNKS:
            raise MalformedCiphertextError("plaintext length exceeds the chunk counter")
        sealed_key = _read_exact(source, n)
        if len(sealed_key) < n:
            raise TruncatedStreamError("stream ends inside the sealed file key")
        return cls(suite, chunk_size, length, fp, sealed_key, fixed + sealed_key)


def _read_exact(source: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = source.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _readinto_exact(source: BinaryIO, view: memoryview) -> int:
    filled = 0
    while filled < len(view):
        got = source.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    return filled


def _remaining(source: BinaryIO) -> int | None:
    """Bytes left in a seekable source; None for a stream of unknown length."""
    try:
        if not source.seekable():
            return None
        position = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(position)
    except (OSError, io.UnsupportedOperation, AttributeError):
        return None
    return end - position


def _plaintext_length(source: BinaryIO) -> int:
    left = _remaining(source)
    if left is None:
        raise ValueError("encrypt_stream needs a seekable source or an explicit plaintext_length")
    return left


def encrypt_stream(
    source: BinaryIO,
    sink: BinaryIO,
    recipient: HpkePublicKey,
    info: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    plaintext_length: int | None = None,
    progress: Progress = no_progress,
) -> int:
    """Encrypt ``source`` to ``sink`` for ``recipient`` under context ``info``.

    Memory use is two chunk buffers regardless of size. ``progress`` receives the
    number of plaintext bytes processed after each chunk. Returns the number of
    ciphertext bytes written.
    """
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}")
    length = _plaintext_length(source) if plaintext_length is None else plaintext_length
    file_key = AESGCM.generate_key(bit_length=256)
    header = StreamHeader.build(recipient, file_key, info, chunk_size, length)
    aad = hashlib.sha256(header.raw).digest()
    aead = AESGCM(file_key)
    sink.write(header.raw)
    written = len(header.raw)
    plain = bytearray(chunk_size)
    cipher = bytearray(chunk_size + TAG_SIZE)
    for index in range(header.chunks):
        size = header.chunk_plaintext_size(index)
        view = memoryview(plain)[:size]
        if _readinto_exact(source, view) != size:
            raise ValueError(f"source ended before the declared {length} bytes")
        out = memoryview(cipher)[: size + TAG_SIZE]
        aead.encrypt_into(_nonce(index, index == header.chunks - 1), view, aad, out)
        sink.write(out)
        written += len(out)
        progress(size)
    if source.read(1):
        raise ValueError(f"source is longer than the declared {length} bytes")
    return written


class _Decryptor:
    """Shared state for decrypting one stream chunk by chunk."""

    def __init__(self, source: BinaryIO, private_key: HpkePrivateKey, info: bytes) -> None:
        self.source = source
        self.header = StreamHeader.read(source)
        if self.header.suite is not private_key.suite:
            raise WrongKeyError(
                f"stream was encrypted to a {self.header.suite.value} key, "
                f"this key is {private_key.suite.value}"
            )
        if self.header.recipient_fingerprint != private_key.public_key().fingerprint():
            raise WrongKeyError(
                f"stream was encrypted to key {self.header.recipient_fingerprint.hex()}, "
                f"not to this key {private_key.public_key().fingerprint().hex()}"
            )
        fixed = self.header.raw[: _FIXED.size]
        file_key = unseal(self.header.sealed_key, private_key, _bound_info(info, fixed))
        if len(file_key) != _KEY_SIZE:
            raise MalformedCiphertextError("sealed file key has the wrong length")
        self.aead = AESGCM(file_key)
        self.aad = hashlib.sha256(self.header.raw).digest()
        self._check_size()
        self.cipher = bytearray(self.header.chunk_size + TAG_SIZE)
        self.plain = bytearray(self.header.chunk_size)

    def _check_size(self) -> None:
        """Compare the (now authenticated) header's length with what the source holds.

        Only for sources that know their size; a stream read as it arrives is checked
        chunk by chunk instead, at a cost bounded by the bytes that really arrive.
        """
        left = _remaining(self.source)
        if left is None:
            return
        header = self.header
        expected = header.plaintext_length + TAG_SIZE * header.chunks
        if left > expected:
            raise TrailingDataError(
                f"the stream holds {left - expected} bytes after its final chunk "
                f"{header.chunks - 1}: a chunk or bytes were appended"
            )
        if left < expected:
            full = header.chunk_size + TAG_SIZE
            index = min(left // full, header.chunks - 1)
            present = left - index * full
            wanted = header.chunk_plaintext_size(index) + TAG_SIZE
            raise TruncatedStreamError(
                f"stream ends in chunk {index} of {header.chunks}: "
                f"{present} of {wanted} bytes present"
            )

    def chunks(self) -> Iterator[memoryview]:
        """Yield each authenticated plaintext chunk (a view reused between chunks)."""
        header = self.header
        last_index = header.chunks - 1
        for index in range(header.chunks):
            expected = header.chunk_plaintext_size(index) + TAG_SIZE
            data = memoryview(self.cipher)[:expected]
            got = _readinto_exact(self.source, data)
            if got < expected:
                raise TruncatedStreamError(
                    f"stream ends in chunk {index} of {header.chunks}: "
                    f"{got} of {expected} bytes present"
                )
            out = memoryview(self.plain)[: expected - TAG_SIZE]
            try:
                self.aead.decrypt_into(_nonce(index, index == last_index), data, self.aad, out)
            except InvalidTag:
                raise self._diagnose(index, data) from None
            yield out
        if self.source.read(1):
            raise TrailingDataError(
                f"data follows the final chunk {last_index}: a chunk or bytes were appended"
            )

    def _diagnose(self, index: int, data: memoryview) -> Exception:
        header = self.header
        scratch = bytearray(len(data) - TAG_SIZE)
        nearby = (
            other
            for distance in range(1, DIAGNOSIS_DISTANCE + 1)
            for other in (index - distance, index + distance)
            if 0 <= other < header.chunks
        )
        for other in nearby:
            if header.chunk_plaintext_size(other) + TAG_SIZE != len(data):
                continue
            try:
                self.aead.decrypt_into(
                    _nonce(other, other == header.chunks - 1), data, self.aad, scratch
                )
            except InvalidTag:
                continue
            return ChunkOrderError(
                f"chunk at position {index} is chunk {other} of this stream: "
                "chunks were reordered or duplicated"
            )
        return ChunkAuthenticationError(
            f"chunk {index} of {header.chunks} failed authentication: a flipped bit, "
            "a chunk spliced in from another stream, or an altered header"
        )


def decrypt_stream_unverified(
    source: BinaryIO, private_key: HpkePrivateKey, info: bytes
) -> Iterator[memoryview]:
    """Yield authenticated chunks one by one, for callers that stage output themselves.

    Each chunk is authentic, but the stream as a whole is only known to be
    complete once iteration finishes without an exception: callers must discard
    everything they received if it raises.
    """
    return _Decryptor(source, private_key, info).chunks()


def decrypt_stream_to_path(
    source: BinaryIO,
    destination: Path,
    private_key: HpkePrivateKey,
    info: bytes,
    *,
    mode: int = 0o600,
    progress: Progress = no_progress,
) -> int:
    """Decrypt to ``destination``, which appears only after the final chunk verifies.

    Plaintext goes to a temporary sibling first; any error removes it and leaves
    ``destination`` untouched. Returns the plaintext length.
    """
    total = 0
    decryptor = _Decryptor(source, private_key, info)
    with atomic_writer(
        Path(destination), mode=mode, size_hint=decryptor.header.plaintext_length
    ) as handle:
        for chunk in decryptor.chunks():
            handle.write(chunk)
            total += len(chunk)
            progress(len(chunk))
    return total


def encrypt_file(
    source: Path,
    destination: Path,
    recipient: HpkePublicKey,
    info: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress = no_progress,
) -> int:
    """Encrypt the file ``source`` into ``destination`` atomically; returns bytes written."""
    with Path(source).open("rb") as src:
        length = os.fstat(src.fileno()).st_size
        # The header's size is known only once the key is sealed; this bound is close enough.
        estimate = ciphertext_length(length, chunk_size, _FIXED.size + 2048)
        with atomic_writer(Path(destination), size_hint=estimate) as dst:
            return encrypt_stream(
                src,
                dst,
                recipient,
                info,
                chunk_size=chunk_size,
                plaintext_length=length,
                progress=progress,
            )


def decrypt_file(
    source: Path,
    destination: Path,
    private_key: HpkePrivateKey,
    info: bytes,
    *,
    progress: Progress = no_progress,
) -> int:
    """Decrypt the file ``source`` into ``destination`` (see :func:`decrypt_stream_to_path`)."""
    with Path(source).open("rb") as src:
        return decrypt_stream_to_path(src, destination, private_key, info, progress=progress)


def encrypt_bytes(
    plaintext: bytes, recipient: HpkePublicKey, info: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> bytes:
    """Encrypt an in-memory buffer into the stream format."""
    sink = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), sink, recipient, info, chunk_size=chunk_size)
    return sink.getvalue()


def decrypt_bytes(ciphertext: bytes, private_key: HpkePrivateKey, info: bytes) -> bytes:
    """Decrypt an in-memory stream; returns only once every chunk verified."""
    parts = [
        bytes(chunk)
        for chunk in decrypt_stream_unverified(io.BytesIO(ciphertext), private_key, info)
    ]
    return b"".join(parts)
