"""The storage layer: content-addressed blob stores chosen by URL.

Knows nothing about chains, training or what the bytes mean.
"""

from cotune.storage.base import BlobStore
from cotune.storage.blob import BlobRef
from cotune.storage.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    StorageConfigError,
    StorageError,
)
from cotune.storage.factory import open_store
from cotune.storage.local import LocalStore
from cotune.storage.s3 import S3Store

__all__ = [
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobRef",
    "BlobStore",
    "LocalStore",
    "S3Store",
    "StorageConfigError",
    "StorageError",
    "open_store",
]
