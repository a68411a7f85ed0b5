"""Exceptions of the storage layer."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by :mod:`cotune.storage`."""


class StorageConfigError(StorageError):
    """A storage URL or option is invalid or names an unavailable backend."""


class BlobNotFoundError(StorageError):
    """No blob with this content id is stored."""


class BlobIntegrityError(StorageError):
    """Stored bytes do not hash to their content id, or have the wrong size."""
