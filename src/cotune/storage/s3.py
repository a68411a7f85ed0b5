"""``S3Store``: blobs in any S3-compatible object store (``s3://bucket/prefix``).

The content id must be known before the object key exists, so a put hashes
first: a seekable source is read twice (hash, then upload); anything else is
spooled to a temporary file. Large blobs go up as multipart uploads, which S3
publishes atomically on completion. An existing blob is not uploaded again.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cotune.common.progress import Progress, no_progress
from cotune.storage.base import BlobStore, Source, as_stream
from cotune.storage.blob import READ_BLOCK, BlobRef, RangeReader, VerifyingReader
from cotune.storage.errors import BlobNotFoundError, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_PART_SIZE: Final = 8 << 20
_NOT_FOUND: Final = {"404", "NoSuchKey", "NotFound"}


class S3Store(BlobStore):
    """Blobs as objects ``<prefix>/blobs/ab/<cid>`` in one bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        client: S3Client | None = None,
    ) -> None:
        if not bucket:
            raise StorageError("S3 bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client: S3Client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region_name,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        self._transfer = TransferConfig(
            multipart_threshold=part_size, multipart_chunksize=part_size, use_threads=True
        )

    def key_of(self, cid: str) -> str:
        """The object key of blob ``cid``."""
        cid = self._cid(cid)
        path = f"blobs/{cid[:2]}/{cid}"
        return f"{self.prefix}/{path}" if self.prefix else path

    def put(self, source: Source, *, progress: Progress = no_progress) -> BlobRef:
        """Hash, then upload (multipart above the part size) unless already stored."""
        stream = as_stream(source)
        if stream.seekable():
            start = stream.tell()
            ref = _hash_stream(stream)
            stream.seek(start)
            return self._upload(stream, ref, progress)
        with tempfile.TemporaryFile() as spool:
            ref = _hash_stream(stream, copy_to=cast(BinaryIO, spool))
            spool.seek(0)
            return self._upload(cast(BinaryIO, spool), ref, progress)

    def _upload(self, body: BinaryIO, ref: BlobRef, progress: Progress) -> BlobRef:
        if self.exists(ref.cid) and self.stat(ref.cid).size == ref.size:
            progress(ref.size)
            return ref
        self._call(
            "upload",
            ref.cid,
            lambda: self._client.upload_fileobj(
                body, self.bucket, self.key_of(ref.cid), Config=self._transfer, Callback=progress
            ),
        )
        return ref

    def open(self, ref: BlobRef) -> BinaryIO:
        """Stream the object, verifying size and hash."""
        response = self._call(
            "download",
            ref.cid,
            lambda: self._client.get_object(Bucket=self.bucket, Key=self.key_of(ref.cid)),
        )
        reader = VerifyingReader(response["Body"], ref)
        return cast(BinaryIO, io.BufferedReader(reader, READ_BLOCK))

    def open_range(self, ref: BlobRef, start: int, length: int) -> BinaryIO:
        """Stream a byte range with an HTTP ``Range`` request (not hash-verified)."""
        self._check_range(ref, start, length)
        if length == 0:
            return io.BytesIO(b"")
        response = self._call(
            "download",
            ref.cid,
            lambda: self._client.get_object(
                Bucket=self.bucket,
                Key=self.key_of(ref.cid),
                Range=f"bytes={start}-{start + length - 1}",
            ),
        )
        reader = RangeReader(response["Body"], length, f"blob {ref.cid}")
        return cast(BinaryIO, io.BufferedReader(reader, READ_BLOCK))

    def stat(self, cid: str) -> BlobRef:
        """Size of a stored object."""
        cid = self._cid(cid)
        head = self._call(
            "stat", cid, lambda: self._client.head_object(Bucket=self.bucket, Key=self.key_of(cid))
        )
        return BlobRef(cid, int(head["ContentLength"]))

    def exists(self, cid: str) -> bool:
        """Whether the object exists."""
        try:
            self.stat(cid)
        except BlobNotFoundError:
            return False
        return True

    def _call(self, action: str, cid: str, operation: Any) -> Any:
        try:
            return operation()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _NOT_FOUND:
                raise BlobNotFoundError(f"blob {cid} is not in {self.url}") from None
            raise StorageError(
                f"S3 {action} of blob {cid} in {self.url} failed: {code} {error.get('Message', '')}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {action} of blob {cid} in {self.url} failed: {exc}") from exc


def _hash_stream(stream: BinaryIO, copy_to: BinaryIO | None = None) -> BlobRef:
    digest = hashlib.sha256()
    size = 0
    while block := stream.read(READ_BLOCK):
        digest.update(block)
        size += len(block)
        if copy_to is not None:
            copy_to.write(block)
    return BlobRef(digest.hexdigest(), size)
