"""Crash-safe file writes: temp name in the same directory, fsync, then rename."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry so a completed rename survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A unique hidden sibling of ``path``, so the final rename stays on one filesystem."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, mode: int = 0o644, overwrite: bool = True, size_hint: int = 0
) -> Iterator[BinaryIO]:
    """Yield a binary file that appears at ``path`` only if the block completes.

    On any exception the temporary file is removed and ``path`` is untouched.
    With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` and
    is never replaced, even by a concurrent writer. ``size_hint`` preallocates
    the file, which makes large sequential writes several times faster.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if size_hint > 0 and hasattr(os, "posix_fallocate"):
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, 0, size_hint)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if size_hint > 0:
                handle.truncate(handle.tell())
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
        fsync_directory(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(
    path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode=mode, overwrite=overwrite) as handle:
        handle.write(data)
