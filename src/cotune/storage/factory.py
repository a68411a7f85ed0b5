"""``open_store(url)``: the one place a storage backend is chosen from a URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from cotune.storage.base import BlobStore
from cotune.storage.errors import StorageConfigError
from cotune.storage.local import LocalStore
from cotune.storage.s3 import S3Store

SUPPORTED = "file:///absolute/path, a plain directory path, or s3://bucket/prefix"
_S3_OPTIONS = {"endpoint_url", "region"}


def open_store(url: str) -> BlobStore:
    """Open the blob store named by ``url``.

    * ``file:///var/lib/cotune/blobs`` or a plain path: :class:`LocalStore`.
    * ``s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&region=us-east-1``:
      :class:`S3Store`; credentials come from the usual AWS environment
      variables or config files, and ``AWS_ENDPOINT_URL`` also sets the endpoint.
    """
    if not url:
        raise StorageConfigError(f"empty storage URL; expected {SUPPORTED}")
    if url.lower().startswith("0g:"):
        raise StorageConfigError(
            "the 0G Storage backend is not part of this release; use a local path or s3://"
        )
    parsed = urlparse(url)
    if parsed.scheme == "":
        return LocalStore(Path(url))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageConfigError(
                f"file URL {url!r} has host {parsed.netloc!r}; use file:///absolute/path"
            )
        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        unknown = set(options) - _S3_OPTIONS
        if unknown:
            raise StorageConfigError(
                f"unknown S3 option(s) {sorted(unknown)} in {url!r}; known: {sorted(_S3_OPTIONS)}"
            )
        if not parsed.netloc:
            raise StorageConfigError(f"S3 URL {url!r} names no bucket; expected s3://bucket/prefix")
        return S3Store(
            parsed.netloc,
            parsed.path,
            endpoint_url=options.get("endpoint_url"),
            region_name=options.get("region"),
        )
    raise StorageConfigError(
        f"unsupported storage URL scheme {parsed.scheme!r}; expected {SUPPORTED}"
    )
