"""Resumable, verified downloads from the dataset server (:mod:`cotune.dataset.server`).

:func:`download_version` writes into ``<dest>.part`` and, when that file is already
there, resumes it with ``Range: bytes=<size>-`` and ``If-Range: "<sha256>"`` (the
server's ETag is the signed SHA-256, so a changed artifact sends the whole file
again). The finished file is checked against the *signed* version entry the caller
verified (size and whole-file SHA-256), never against the server's headers alone;
only then is it fsynced and renamed to ``dest``. On a mismatch the ``.part`` is
deleted and :class:`DownloadVerificationError` raised: nothing unverified ever
appears at ``dest``. A transfer cut short keeps its ``.part`` for the next try.
The ``.part``, and so ``dest``, is mode 0600 like a keystore (a ``.part`` left wider
by an older client is narrowed when resumed): the bytes are the plaintext dataset. A
``.part`` that is a symbolic link is refused, never written through.

:func:`fetch_version_log` fetches ``GET /versions`` and verifies the chain offline.

The server is not trusted with memory either: an artifact is read no further than its
signed size, the version log no further than :data:`MAX_LOG_BYTES`, and any other answer
(an error's detail, a minted token) no further than :data:`MAX_ANSWER_BYTES`.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import httpx

from cotune.common import jsonsafe
from cotune.common.atomic import fsync_directory
from cotune.common.errors import CotuneError
from cotune.dataset.versions import VERSION_LOG_NAME, SignedVersion, VersionEntry, VersionLog

CHUNK_SIZE = 1 << 16
"""How many bytes are read from disk or the network at a time."""
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
"""Per-operation timeouts (a slow but steady download never times out as a whole)."""
MAX_LOG_BYTES = 16 << 20
"""The longest version log :func:`fetch_version_log` reads (tens of thousands of versions)."""
MAX_ANSWER_BYTES = 16 << 10
"""The most bytes read of an error answer (only its detail is wanted) or a minted token."""

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` while a download runs."""


class DownloadError(CotuneError):
    """A download was refused, cut off, or answered in a way the client cannot use."""


class DownloadRefusedError(DownloadError):
    """The server refused the request (``status`` is its HTTP status: 401, 403, 404, ...)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class DownloadVerificationError(DownloadError):
    """The downloaded bytes do not match the signed version entry (size or SHA-256)."""


def part_path(dest: Path) -> Path:
    """Where :func:`download_version` keeps an unfinished download of ``dest``."""
    dest = Path(dest)
    return dest.with_suffix(dest.suffix + ".part")


def _hash_prefix(handle: BinaryIO, digest: hashlib._Hash) -> int:
    handle.seek(0)
    size = 0
    while chunk := handle.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    return size


class Answer(NamedTuple):
    """A whole answer of :func:`send`."""

    status: int
    body: bytes


def _read_up_to(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether that was all of it."""
    body = bytearray()
    for chunk in response.iter_bytes(CHUNK_SIZE):
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), False
    return bytes(body), True


def error_detail(body: bytes) -> str | None:
    """The ``detail`` of an error answer's JSON object (as the server wrote it), if any."""
    try:
        answer = jsonsafe.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(answer, dict) or "detail" not in answer:
        return None
    return str(answer["detail"])


def _refusal(status: int, body: bytes, version: int) -> DownloadRefusedError:
    detail = error_detail(body)
    reason = {
        401: "the server wants a valid member token",
        403: "the token does not open this version",
        404: f"the server does not publish v{version}",
    }.get(status, f"the server answered HTTP {status}")
    suffix = f" ({detail})" if detail else ""
    return DownloadRefusedError(status, f"{reason}{suffix}")


def download_version(
    base_url: str,
    version: int,
    token: str,
    dest: Path,
    expected: SignedVersion | VersionEntry,
    *,
    progress: Progress | None = None,
    client: httpx.Client | None = None,
) -> Path:
    """Download ``version``'s artifact to ``dest``, resuming a ``.part``; verify; return ``dest``.

    ``dest`` is written mode 0600 (through its ``.part``). ``expected`` is the entry the
    caller verified from the signed log (its version must be ``version``). Raises
    :class:`DownloadVerificationError` when the bytes do not match it (the ``.part`` is
    deleted), :class:`DownloadRefusedError` when the server says no, and
    :class:`DownloadError` when the transfer fails (the ``.part`` is kept for a retry).
    """
    entry = expected.entry if isinstance(expected, SignedVersion) else expected
    if entry.version != version:
        raise ValueError(f"expected entry is v{entry.version}, not v{version}")
    dest = Path(dest)
    part = part_path(dest)
    url = f"{base_url.rstrip('/')}/versions/{version}/artifact"
    etag = f'"{entry.artifact_sha256.hex()}"'
    own_client = client is None
    http = httpx.Client(timeout=DEFAULT_TIMEOUT) if client is None else client
    try:
        for attempt in range(2):  # a second, fresh attempt after a surprising answer
            if _fetch(http, url, token, part, entry, etag, progress, fresh=attempt > 0):
                break
        else:
            raise DownloadError(f"{url}: the server did not resume the download consistently")
    except DownloadVerificationError:
        part.unlink(missing_ok=True)
        raise
    except DownloadError:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()  # nothing worth resuming
        raise
    finally:
        if own_client:
            http.close()
    _verify_and_commit(part, dest, entry)
    return dest


def _fetch(
    http: httpx.Client,
    url: str,
    token: str,
    part: Path,
    entry: VersionEntry,
    etag: str,
    progress: Progress | None,
    *,
    fresh: bool,
) -> bool:
    """Bring ``part`` to the full size; ``False`` to start again from zero."""
    total = entry.artifact_size
    digest = hashlib.sha256()
    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise DownloadError(f"{part} is a symbolic link: not writing through it") from None
    with os.fdopen(fd, "r+b") as handle:
        os.fchmod(fd, 0o600)
        if fresh:
            handle.truncate(0)
        have = _hash_prefix(handle, digest)
        if have > total:  # longer than the signed size: useless, start over
            handle.truncate(0)
            digest, have = hashlib.sha256(), 0
        if have == total:
            return True
        headers = {"Authorization": f"Bearer {token}"}
        if have:
            headers |= {"Range": f"bytes={have}-", "If-Range": etag}
        try:
            with http.stream("GET", url, headers=headers) as response:
                if response.status_code == 200:
                    handle.seek(0)
                    handle.truncate(0)
                    have = 0
                elif response.status_code == 206:
                    if not response.headers.get("content-range", "").startswith(f"bytes {have}-"):
                        return False
                elif response.status_code == 416:
                    return False
                else:
                    body, _ = _read_up_to(response, MAX_ANSWER_BYTES)
                    raise _refusal(response.status_code, body, entry.version)
                handle.seek(have)
                if progress is not None:
                    progress(have, total)
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    if have + len(chunk) > total:
                        handle.flush()
                        raise DownloadVerificationError(
                            f"the server sent more than the signed {total} bytes"
                        )
                    handle.write(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have, total)
        except httpx.HTTPError as exc:
            raise DownloadError(f"{url}: transfer failed after {have} bytes: {exc}") from exc
        finally:
            handle.flush()
            os.fsync(handle.fileno())
    if have != total:
        raise DownloadError(f"{url}: the server sent {have} of {total} bytes")
    return True


def _verify_and_commit(part: Path, dest: Path, entry: VersionEntry) -> None:
    """Check ``part`` against the signed entry; rename it to ``dest`` or delete it and raise."""
    digest = hashlib.sha256()
    with part.open("rb") as handle:
        size = _hash_prefix(handle, digest)
        os.fsync(handle.fileno())
    if size != entry.artifact_size or digest.digest() != entry.artifact_sha256:
        part.unlink(missing_ok=True)
        raise DownloadVerificationError(
            f"v{entry.version}: downloaded {size} bytes with SHA-256 {digest.hexdigest()}, the "
            f"signed entry says {entry.artifact_size} bytes, {entry.artifact_sha256.hex()}"
        )
    os.replace(part, dest)
    fsync_directory(dest.parent)


def send(
    client: httpx.Client | None, method: str, url: str, *, limit: int, **kwargs: Any
) -> Answer:
    """One request on ``client`` (or on a client of its own), its answer read whole.

    ``DownloadError`` if it fails, or if the answer's body is longer than ``limit`` bytes
    (it is read no further); ``kwargs`` go to :meth:`httpx.Client.stream`.
    """
    http = httpx.Client(timeout=DEFAULT_TIMEOUT) if client is None else client
    try:
        with http.stream(method, url, **kwargs) as response:
            body, whole = _read_up_to(response, limit)
    except httpx.HTTPError as exc:
        raise DownloadError(f"{url}: {exc}") from exc
    finally:
        if client is None:
            http.close()
    if not whole:
        raise DownloadError(f"{url}: the answer is longer than {limit} bytes")
    return Answer(response.status_code, body)


def fetch_version_log(
    base_url: str,
    *,
    expected_publisher: str | None = None,
    known_head: SignedVersion | VersionEntry | None = None,
    client: httpx.Client | None = None,
) -> VersionLog:
    """``GET /versions`` and verify it offline (see :meth:`VersionLog.verify`); return the log.

    The log is parsed from the response in memory: its ``path`` is the bare file name
    ``versions.json`` (call ``save`` on a copy with a real path to keep it).
    """
    url = f"{base_url.rstrip('/')}/versions"
    answer = send(client, "GET", url, limit=MAX_LOG_BYTES)
    if answer.status != 200:
        raise DownloadRefusedError(
            answer.status, f"{url}: the server answered HTTP {answer.status}"
        )
    log = VersionLog.parse(answer.body, Path(VERSION_LOG_NAME))
    log.verify(expected_publisher, known_head=known_head)
    return log


__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_LOG_BYTES",
    "Answer",
    "DownloadError",
    "DownloadRefusedError",
    "DownloadVerificationError",
    "Progress",
    "download_version",
    "error_detail",
    "fetch_version_log",
    "part_path",
    "send",
]
