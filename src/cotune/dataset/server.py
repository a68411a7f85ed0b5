"""The gated dataset download server: every signed version's artifact, behind member tokens.

A serving root holds the bundle's signed ``versions.json`` and each version's artifact,
content-addressed as ``artifacts/<sha256 hex>`` (a bundle directory only keeps its head
artifact, so :func:`publish_version` is run once per version to keep the old ones).

Endpoints:

``GET /versions``
    The signed version log, as published (public: it holds only hashes and signatures;
    clients verify it themselves).
``GET /versions/{n}/artifact``
    Needs ``Authorization: Bearer <token>`` from the :class:`~cotune.dataset.tokens.TokenStore`
    whose scope covers ``n`` (a purchase: exactly the version bought; an admission:
    ``1..N``): 401 for a missing or unknown token, 403 for a revoked or out-of-scope one
    (the detail says by whom it was revoked, or which versions it covers), 404 for a
    version the log does not have, 422 for ``n`` outside ``1..2**64-1``, 503 when the
    token journal cannot be read. A full download is 200; a single ``Range``
    (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) is 206 with ``Content-Range``, or 416 when
    it cannot be satisfied (a first byte past the end, however many digits it has: no
    position is ever converted from more than 19 significant digits). ``If-Range`` that
    does not match the ETag gets the full 200. Every answer carries ``ETag: "<sha256>"``,
    ``X-Content-SHA256`` (the whole artifact's signed SHA-256 hex), ``Accept-Ranges: bytes``
    and ``Content-Length``; the body is streamed from disk in chunks.
``GET /market``
    When the server sells through a ``DatasetMarket`` (:class:`~cotune.dataset.market.SalesDesk`):
    the chain id, market address, dataset key and each version's price; 404 otherwise.
``POST /purchases``
    A signed :class:`~cotune.dataset.market.PurchaseClaim` in (a JSON object of at most
    :data:`MAX_CLAIM_BYTES`; 413 above, read no further), a member token for exactly
    that version out (200 ``{"token", "label", "version", "receipt_id", "replaced"}``; the
    receipt's earlier token, if any, stops working). 400 for a malformed or stale claim,
    401 for a bad signature, 402 when the buyer has no receipt on chain, 403 when the
    publisher revoked the receipt's token, 409 for a claim already redeemed, bound to
    another server origin or publisher, or a listing that pins another entry, 503 when the
    chain or the token journal cannot be used (the detail names the kind of failure only:
    the chain's own message, which may hold the RPC URL and its key, is only logged).

The hash headers repeat the signed entry: a client checks what it received against the
entry it verified from the log, never against these headers alone. Artifacts are stored
mode 0600: they are the plaintext data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from cotune.chain.errors import ChainError
from cotune.common import jsonsafe
from cotune.common.atomic import atomic_writer, write_bytes_atomic
from cotune.dataset.bundle import ArtifactError, ArtifactMismatchError, load_bundle
from cotune.dataset.market import ClaimRejectedError, PurchaseClaim, SalesDesk
from cotune.dataset.tokens import (
    RevokedTokenError,
    ScopeError,
    TokenError,
    TokenStore,
    UnknownTokenError,
)
from cotune.dataset.versions import (
    VERSION_LOG_NAME,
    LogFormatError,
    SignedVersion,
    VersionLog,
    verify_artifact,
    verify_bundle,
)

ARTIFACTS_DIR = "artifacts"
"""Where a serving root keeps artifacts, each named by its SHA-256 hex."""
CHUNK_SIZE = 1 << 20
"""How many bytes the server reads from disk (and sends) at a time."""

MAX_CLAIM_BYTES = 4096
"""The largest ``POST /purchases`` body read (a claim takes about 600 bytes); 413 above.
It also bounds how deeply the JSON can nest, which matters: ``py_ecc``, loaded with the
chain stack, raises the recursion limit to 100,000, so a body of some 60,000 ``[`` made
``json`` overflow the C stack and kill the server."""
MAX_POSITION_DIGITS = 19
"""Significant digits of the largest byte position ``Range`` is read as (10**19 bytes is
past the end of any file); a longer number is never converted, only compared."""

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_BEYOND: int = 10**MAX_POSITION_DIGITS
_MAX_VERSION = 2**64 - 1
_log = logging.getLogger(__name__)


def artifact_path(root: Path, sha256: bytes) -> Path:
    """Where ``root`` keeps the artifact with this SHA-256."""
    return Path(root) / ARTIFACTS_DIR / sha256.hex()


def publish_version(root: Path, bundle_dir: Path) -> SignedVersion:
    """Copy a bundle's head artifact and its version log into the serving ``root``.

    The bundle must load (artifact matching its manifest) and its ``versions.json`` must
    verify with the bundle as its head. A log already in ``root`` must be a prefix of the
    new one (no rewritten history). The artifact is copied in chunks, re-hashed as it is
    copied, and lands atomically at ``artifacts/<sha256>``; the log is written last.
    Returns the published head; a bundle or version-log error (a ``CotuneError``) on failure.
    """
    root, bundle_dir = Path(root), Path(bundle_dir)
    bundle = load_bundle(bundle_dir, validate=False)
    log = VersionLog.load(bundle_dir / VERSION_LOG_NAME)
    served_log = root / VERSION_LOG_NAME
    known = VersionLog.load(served_log).verify() if served_log.exists() else None
    head = log.verify(known_head=known)
    verify_bundle(head, bundle)
    target = artifact_path(root, head.entry.artifact_sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        verify_artifact(head, target)  # already stored intact: keep it
        target.chmod(0o600)
    except ArtifactError:
        _copy_verified(bundle.artifact_path, target, head)
    write_bytes_atomic(served_log, log.to_json())
    return head


def _copy_verified(source: Path, target: Path, head: SignedVersion) -> None:
    digest = hashlib.sha256()
    size = 0
    with (
        source.open("rb") as src,
        atomic_writer(target, mode=0o600, size_hint=head.entry.artifact_size) as dst,
    ):
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
        if size != head.entry.artifact_size or digest.digest() != head.entry.artifact_sha256:
            raise ArtifactMismatchError(
                f"{source} changed while it was being published (got {size} bytes, "
                f"SHA-256 {digest.hexdigest()})"
            )


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range ``first..last`` of a file of ``total`` bytes."""

    first: int
    last: int
    total: int

    @property
    def length(self) -> int:
        """How many bytes the range covers."""
        return self.last - self.first + 1

    def content_range(self) -> str:
        """The ``Content-Range`` header value."""
        return f"bytes {self.first}-{self.last}/{self.total}"


class UnsatisfiableRangeError(ValueError):
    """A syntactically valid range that selects no byte of the file."""


def parse_range(header: str | None, total: int) -> ByteRange | None:
    """The single range ``header`` asks for, or ``None`` to send the whole file.

    A missing, malformed or multi-range header, or one whose last byte comes before its
    first, is ignored (``None``, as RFC 9110 allows); ``UnsatisfiableRangeError`` when a
    valid single range selects nothing. Numbers of any length are read exactly as RFC 9110
    means them (a first byte past the end is unsatisfiable, a last byte past the end or a
    suffix longer than the file is clamped), but none is converted from more than
    :data:`MAX_POSITION_DIGITS` significant digits.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    start, end = match.groups()
    if not start and not end:
        return None
    if not start:  # suffix: the last n bytes
        suffix = _position(end)
        if suffix == 0 or total == 0:
            raise UnsatisfiableRangeError(header)
        return ByteRange(max(0, total - suffix), total - 1, total)
    if end and _magnitude(end) < _magnitude(start):
        return None  # invalid range: ignored
    first = _position(start)
    if first >= total:
        raise UnsatisfiableRangeError(header)
    last = total - 1 if not end else min(_position(end), total - 1)
    return ByteRange(first, last, total)


def _magnitude(digits: str) -> tuple[int, str]:
    """A key that orders decimal digit strings by value, without converting them."""
    significant = digits.lstrip("0")
    return len(significant), significant


def _position(digits: str) -> int:
    """A byte position, or :data:`_BEYOND` (past any file) for a longer number."""
    significant = digits.lstrip("0")
    if len(significant) > MAX_POSITION_DIGITS:
        return _BEYOND
    return int(significant or "0")


def _stream(handle: BinaryIO, first: int, length: int) -> Iterator[bytes]:
    try:
        handle.seek(first)
        left = length
        while left > 0:
            chunk = handle.read(min(CHUNK_SIZE, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()


class _LogCache:
    """The serving root's version log, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._data = b""
        self._log = VersionLog(path)

    def get(self) -> tuple[bytes, VersionLog]:
        """The log file's bytes and the parsed log (404 when nothing is published)."""
        with self._lock:
            try:
                status = self._path.stat()
            except FileNotFoundError:
                raise HTTPException(status_code=404, detail="nothing is published") from None
            stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
            if stamp != self._stamp:
                data = self._path.read_bytes()
                try:
                    log = VersionLog.parse(data, self._path)
                except LogFormatError as exc:
                    raise HTTPException(status_code=500, detail="the version log is broken") from (
                        exc
                    )
                self._data, self._log, self._stamp = data, log, stamp
            return self._data, self._log


def create_dataset_app(root: Path, tokens: TokenStore, sales: SalesDesk | None = None) -> FastAPI:
    """The download server for the serving ``root``, gated by ``tokens``; selling via ``sales``."""
    root = Path(root)
    app = FastAPI(
        title="cotune dataset server",
        description="Signed dataset versions; artifacts need a member token.",
    )
    logs = _LogCache(root / VERSION_LOG_NAME)

    @app.get("/versions")
    def versions() -> Response:
        """The signed version log (public)."""
        data, _ = logs.get()
        return Response(content=data, media_type="application/json")

    def desk() -> SalesDesk:
        if sales is None:
            raise HTTPException(
                status_code=404, detail="this server does not sell through a market"
            )
        return sales

    @app.get("/market")
    def market() -> dict[str, Any]:
        """Where and for how much each version is sold (404 when this server does not sell)."""
        selling = desk()
        try:
            return selling.info(logs.get()[1])
        except (ChainError, OSError) as exc:
            raise _market_unavailable(exc) from None

    def redeem(selling: SalesDesk, claim: PurchaseClaim) -> dict[str, Any]:
        try:
            return asdict(selling.redeem(claim, logs.get()[1]))
        except ClaimRejectedError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from None
        except (ChainError, OSError) as exc:
            raise _market_unavailable(exc) from None

    @app.post("/purchases")
    async def purchases(request: Request) -> dict[str, Any]:
        """Redeem a signed purchase claim for a member token scoped to the version bought."""
        selling = desk()  # before reading anything: a server that does not sell reads no body
        claim = _parse_claim(await _read_body(request, MAX_CLAIM_BYTES))
        return await run_in_threadpool(redeem, selling, claim)

    @app.get("/versions/{version}/artifact")
    def artifact(
        version: Annotated[int, PathParam(ge=1, le=_MAX_VERSION)],
        authorization: Annotated[str | None, Header()] = None,
        range: Annotated[str | None, Header()] = None,  # noqa: A002 - the header's name
        if_range: Annotated[str | None, Header()] = None,
    ) -> Response:
        """One version's artifact, whole or a single byte range; needs a bearer token."""
        token = _bearer(authorization)
        try:
            tokens.check(token, version)
        except UnknownTokenError:
            raise HTTPException(
                status_code=401,
                detail="a valid member token is required",
                headers={"WWW-Authenticate": "Bearer"},
            ) from None
        except RevokedTokenError as exc:
            how = exc.record.revocation.describe() if exc.record.revocation else "revoked"
            raise HTTPException(status_code=403, detail=f"this token was {how}") from None
        except ScopeError as exc:
            raise HTTPException(
                status_code=403,
                detail=f"this token covers {exc.record.scope.describe()}, not v{version}",
            ) from None
        except TokenError:
            raise HTTPException(
                status_code=503, detail="the server cannot read its member tokens now"
            ) from None
        signed = logs.get()[1].get(version)
        if signed is None:
            raise HTTPException(status_code=404, detail=f"v{version} is not published")
        sha_hex = signed.entry.artifact_sha256.hex()
        etag = f'"{sha_hex}"'
        try:
            handle = artifact_path(root, signed.entry.artifact_sha256).open("rb")
        except FileNotFoundError:
            raise HTTPException(
                status_code=404, detail=f"v{version}'s artifact is not stored here"
            ) from None
        try:
            total = os.fstat(handle.fileno()).st_size
            headers = {"ETag": etag, "X-Content-SHA256": sha_hex, "Accept-Ranges": "bytes"}
            wanted = range if if_range is None or if_range.strip() == etag else None
            try:
                byte_range = parse_range(wanted, total)
            except UnsatisfiableRangeError:
                handle.close()
                headers["Content-Range"] = f"bytes */{total}"
                return Response(status_code=416, headers=headers)
        except BaseException:
            handle.close()
            raise
        if byte_range is None:
            headers["Content-Length"] = str(total)
            return StreamingResponse(
                _stream(handle, 0, total),
                status_code=200,
                headers=headers,
                media_type="application/octet-stream",
            )
        headers["Content-Length"] = str(byte_range.length)
        headers["Content-Range"] = byte_range.content_range()
        return StreamingResponse(
            _stream(handle, byte_range.first, byte_range.length),
            status_code=206,
            headers=headers,
            media_type="application/octet-stream",
        )

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, read no further than ``limit`` bytes (413 when it is longer)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(
                status_code=413, detail=f"a purchase claim is at most {limit} bytes"
            )
    return bytes(body)


def _parse_claim(body: bytes) -> PurchaseClaim:
    """The claim a ``POST /purchases`` body holds; 400 when it holds none."""
    try:
        raw = jsonsafe.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(status_code=400, detail="malformed claim: not JSON") from None
    if not isinstance(raw, dict):
        raise HTTPException(status_code=400, detail="malformed claim: not a JSON object")
    try:
        return PurchaseClaim.from_dict(raw)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"malformed claim: {exc}") from None


def _market_unavailable(exc: Exception) -> HTTPException:
    """503 for a chain (or disk) failure; its message, which may name the RPC URL, is logged."""
    _log.warning("cannot read the market: %s", exc)
    return HTTPException(
        status_code=503, detail=f"cannot read the market now ({type(exc).__name__})"
    )


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


__all__ = [
    "ARTIFACTS_DIR",
    "CHUNK_SIZE",
    "MAX_CLAIM_BYTES",
    "MAX_POSITION_DIGITS",
    "ByteRange",
    "UnsatisfiableRangeError",
    "artifact_path",
    "create_dataset_app",
    "parse_range",
    "publish_version",
]
