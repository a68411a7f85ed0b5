"""``LocalStore``: the embedded default, a content-addressed directory (``file:///path``).

Layout: ``objects/ab/cd/abcd…`` (two shard levels keep directories small) and
``tmp/`` for uploads in flight. A put streams into ``tmp/``, fsyncs, and renames
into place; two writers of the same blob both rename identical bytes, so
concurrent puts are safe, and a re-put heals a blob corrupted on disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, cast

from cotune.common.atomic import fsync_directory
from cotune.common.progress import Progress, no_progress
from cotune.storage.base import BlobStore, Source, as_stream
from cotune.storage.blob import READ_BLOCK, BlobRef, RangeReader, VerifyingReader
from cotune.storage.errors import BlobNotFoundError, StorageError


class LocalStore(BlobStore):
    """Blobs in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        try:
            self._objects.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create store at {self.root}: {exc.strerror}") from None

    def path_of(self, cid: str) -> Path:
        """Where the blob ``cid`` lives on disk."""
        cid = self._cid(cid)
        return self._objects / cid[:2] / cid[2:4] / cid

    def put(self, source: Source, *, progress: Progress = no_progress) -> BlobRef:
        """Stream ``source`` into the store; atomic and idempotent."""
        stream = as_stream(source)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                while block := stream.read(READ_BLOCK):
                    digest.update(block)
                    handle.write(block)
                    size += len(block)
                    progress(len(block))
                handle.flush()
                os.fsync(handle.fileno())
            ref = BlobRef(digest.hexdigest(), size)
            final = self.path_of(ref.cid)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            fsync_directory(final.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ref

    def open(self, ref: BlobRef) -> BinaryIO:
        """Stream a blob, verifying size and hash."""
        try:
            handle = self.path_of(ref.cid).open("rb", buffering=0)
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {ref.cid} is not in {self.url}") from None
        return cast(BinaryIO, io.BufferedReader(VerifyingReader(handle, ref), READ_BLOCK))

    def open_range(self, ref: BlobRef, start: int, length: int) -> BinaryIO:
        """Stream a byte range of a blob (not hash-verified)."""
        self._check_range(ref, start, length)
        try:
            handle = self.path_of(ref.cid).open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {ref.cid} is not in {self.url}") from None
        handle.seek(start)
        return cast(BinaryIO, io.BufferedReader(RangeReader(handle, length, f"blob {ref.cid}")))

    def stat(self, cid: str) -> BlobRef:
        """Size of a stored blob."""
        cid = self._cid(cid)
        try:
            return BlobRef(cid, self.path_of(cid).stat().st_size)
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {cid} is not in {self.url}") from None

    def exists(self, cid: str) -> bool:
        """Whether the blob file is present."""
        return self.path_of(cid).is_file()
