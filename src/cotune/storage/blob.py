"""Content ids, blob references and the reader that verifies a blob as it streams."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from typing import Final

from cotune.storage.errors import BlobIntegrityError

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
READ_BLOCK: Final = 1 << 20


@dataclass(frozen=True, order=True)
class BlobRef:
    """A stored blob: its content id (hex SHA-256 of the stored bytes) and size."""

    cid: str
    size: int

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.cid):
            raise ValueError(f"content id must be 64 lowercase hex digits, got {self.cid!r}")
        if self.size < 0:
            raise ValueError("blob size cannot be negative")

    @property
    def digest(self) -> bytes:
        """The raw 32-byte SHA-256, the form committed on chain."""
        return bytes.fromhex(self.cid)

    def __str__(self) -> str:
        return f"sha256:{self.cid}"


def validate_cid(cid: str) -> str:
    """Normalise ``cid`` (drop a ``sha256:`` prefix, lower-case) or raise ``ValueError``."""
    value = cid.removeprefix("sha256:").lower()
    if not _HEX64.fullmatch(value):
        raise ValueError(f"content id must be 64 hex digits, got {cid!r}")
    return value


class VerifyingReader(io.RawIOBase):
    """Stream a blob and raise ``BlobIntegrityError`` at the end if it is not what ``ref`` says.

    Bytes are handed out as they arrive, so a consumer must treat what it read
    as unverified until it has read to the end without an exception (cotune's
    consumers authenticate every chunk independently as well).
    """

    def __init__(self, inner: object, ref: BlobRef) -> None:
        super().__init__()
        self._inner = inner
        self._ref = ref
        self._hash = hashlib.sha256()
        self._seen = 0
        self._done = False
        self._failure: BlobIntegrityError | None = None

    def readable(self) -> bool:
        """Always true: this is a read-only stream."""
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Fill ``buffer`` from the blob; at EOF check size and hash."""
        if self._failure is not None:
            raise self._failure
        if self._done:
            return 0
        try:
            return self._read_verified(buffer)
        except BlobIntegrityError as exc:
            self._failure = exc
            raise

    def _read_verified(self, buffer: memoryview | bytearray) -> int:
        view = memoryview(buffer).cast("B")
        data: bytes = self._inner.read(len(view))  # type: ignore[attr-defined]
        if data:
            count = len(data)
            self._seen += count
            if self._seen > self._ref.size:
                raise BlobIntegrityError(
                    f"blob {self._ref.cid} is longer than its recorded {self._ref.size} bytes"
                )
            self._hash.update(data)
            view[:count] = data
            return count
        self._done = True
        if self._seen != self._ref.size:
            raise BlobIntegrityError(
                f"blob {self._ref.cid} has {self._seen} bytes, expected {self._ref.size}"
            )
        if self._hash.hexdigest() != self._ref.cid:
            raise BlobIntegrityError(
                f"blob {self._ref.cid} is corrupt: its bytes hash to {self._hash.hexdigest()}"
            )
        return 0

    def close(self) -> None:
        """Close this reader and the underlying stream."""
        close = getattr(self._inner, "close", None)
        if callable(close):
            close()
        super().close()


class RangeReader(io.RawIOBase):
    """Hand out exactly ``length`` bytes of ``inner``; a short source is an integrity error."""

    def __init__(self, inner: object, length: int, label: str) -> None:
        super().__init__()
        self._inner = inner
        self._left = length
        self._label = label

    def readable(self) -> bool:
        """Always true: this is a read-only stream."""
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Fill ``buffer`` with up to the remaining bytes of the range."""
        if self._left == 0:
            return 0
        view = memoryview(buffer).cast("B")
        data: bytes = self._inner.read(min(len(view), self._left))  # type: ignore[attr-defined]
        if not data:
            raise BlobIntegrityError(f"{self._label} ended {self._left} bytes before its range")
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        """Close this reader and the underlying stream."""
        close = getattr(self._inner, "close", None)
        if callable(close):
            close()
        super().close()
