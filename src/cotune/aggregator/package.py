"""An adapter directory as one deterministic archive, and back.

The enclave encrypts the archive once; every accepted contributor decrypts the same
bytes. Entries are sorted, with fixed times, owners and modes, so the same adapter
gives the same archive. Unpacking accepts only plain files at the top level and
writes nothing at the destination unless every entry was read.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path

from cotune.common.atomic import fsync_directory
from cotune.common.errors import CotuneError

MAX_ENTRIES = 64


class PackageError(CotuneError):
    """The archive is not an adapter package."""


def pack_adapter(directory: Path) -> bytes:
    """The files of ``directory`` (top level only) as a deterministic tar archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack_adapter(data: bytes, destination: Path) -> list[str]:
    """Unpack into ``destination`` (which must not exist); returns the file names."""
    if destination.exists():
        raise FileExistsError(f"{destination} already exists")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                name = member.name
                if not member.isfile() or "/" in name or name in ("", ".", ".."):
                    raise PackageError(f"unexpected archive entry {name!r}")
                if len(files) >= MAX_ENTRIES:
                    raise PackageError("too many archive entries")
                handle = archive.extractfile(member)
                if handle is None:
                    raise PackageError(f"unreadable archive entry {name!r}")
                files[name] = handle.read()
    except tarfile.TarError as exc:
        raise PackageError(f"not an adapter archive: {exc}") from exc
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        for name, content in files.items():
            (staging / name).write_bytes(content)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(destination.parent)
    return sorted(files)
