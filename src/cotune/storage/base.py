"""The ``BlobStore`` interface: content-addressed, verified, streaming."""

from __future__ import annotations

import abc
import io
from pathlib import Path
from typing import BinaryIO

from cotune.common.atomic import atomic_writer
from cotune.common.progress import Progress, no_progress
from cotune.storage.blob import READ_BLOCK, BlobRef, validate_cid

Source = BinaryIO | bytes | bytearray | memoryview


def as_stream(source: Source) -> BinaryIO:
    """Wrap in-memory bytes as a stream; pass streams through."""
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source))
    return source


class BlobStore(abc.ABC):
    """Content-addressed blob storage.

    A blob's id is the SHA-256 of its bytes. ``put`` is atomic (a blob is either
    absent or complete) and idempotent; ``open`` verifies the hash while
    streaming and fails closed; a blob corrupted at rest is detected on read.
    """

    url: str

    @abc.abstractmethod
    def put(self, source: Source, *, progress: Progress = no_progress) -> BlobRef:
        """Store the bytes of ``source`` and return their reference."""

    @abc.abstractmethod
    def open(self, ref: BlobRef) -> BinaryIO:
        """Stream a blob; raises ``BlobIntegrityError`` at the end if it does not match ``ref``."""

    @abc.abstractmethod
    def open_range(self, ref: BlobRef, start: int, length: int) -> BinaryIO:
        """Stream ``length`` bytes from offset ``start``.

        A range cannot be checked against the whole-blob hash; callers
        authenticate ranges themselves (cotune ciphertext chunks carry AEAD tags).
        """

    @abc.abstractmethod
    def stat(self, cid: str) -> BlobRef:
        """The reference of a stored blob; raises ``BlobNotFoundError`` when absent."""

    @abc.abstractmethod
    def exists(self, cid: str) -> bool:
        """Whether a blob with this content id is stored."""

    def put_file(self, path: Path, *, progress: Progress = no_progress) -> BlobRef:
        """Store a file's bytes."""
        with Path(path).open("rb") as handle:
            return self.put(handle, progress=progress)

    def get_bytes(self, ref: BlobRef, *, progress: Progress = no_progress) -> bytes:
        """Read a whole blob into memory, verified; ``progress`` gets bytes read."""
        parts = []
        with self.open(ref) as reader:
            while block := reader.read(READ_BLOCK):
                parts.append(block)
                progress(len(block))
        return b"".join(parts)

    def download(
        self, ref: BlobRef, destination: Path, *, progress: Progress = no_progress
    ) -> None:
        """Copy a blob to ``destination``, which appears only once the hash verified."""
        with self.open(ref) as reader, atomic_writer(Path(destination)) as handle:
            while block := reader.read(READ_BLOCK):
                handle.write(block)
                progress(len(block))

    def verify(self, ref: BlobRef) -> None:
        """Read a blob end to end; raises ``BlobIntegrityError`` if it is corrupt."""
        with self.open(ref) as reader:
            while reader.read(READ_BLOCK):
                pass

    @staticmethod
    def _check_range(ref: BlobRef, start: int, length: int) -> None:
        if start < 0 or length < 0 or start + length > ref.size:
            raise ValueError(
                f"range {start}+{length} is outside blob {ref.cid} of {ref.size} bytes"
            )

    @staticmethod
    def _cid(cid: str) -> str:
        return validate_cid(cid)
