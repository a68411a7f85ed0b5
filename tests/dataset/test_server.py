"""The gated dataset server over real HTTP (uvicorn), member tokens, and resumable downloads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from fastapi import FastAPI, Response
from hypothesis import given
from hypothesis import strategies as st

from cotune.common.serving import serve_in_background
from cotune.dataset import client
from cotune.dataset.bundle import init_bundle, update_bundle
from cotune.dataset.client import (
    DownloadError,
    DownloadRefusedError,
    DownloadVerificationError,
    download_version,
    fetch_version_log,
    part_path,
)
from cotune.dataset.server import (
    ByteRange,
    UnsatisfiableRangeError,
    artifact_path,
    create_dataset_app,
    parse_range,
    publish_version,
)
from cotune.dataset.tokens import TokenScope, TokenStore
from cotune.dataset.versions import VERSION_LOG_NAME, SignedVersion, VersionLog
from cotune.training.data import write_jsonl

PUBLISHER = Account.create()


def _records(version: int, count: int) -> list[dict[str, Any]]:
    return [
        {"text": f"version {version} example {i}: " + "lorem ipsum dolor sit amet " * 4}
        for i in range(count)
    ]


@dataclass(frozen=True)
class Published:
    root: Path
    versions: list[SignedVersion]
    data: dict[int, bytes]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    tmp = tmp_path_factory.mktemp("publish")
    bundle_dir, root = tmp / "bundle", tmp / "serve"
    log = VersionLog.open(bundle_dir / VERSION_LOG_NAME)
    versions: list[SignedVersion] = []
    data: dict[int, bytes] = {}
    for version, count in ((1, 300), (2, 2000)):
        source = tmp / f"v{version}.jsonl"
        write_jsonl(source, _records(version, count))
        if version == 1:
            bundle = init_bundle(
                bundle_dir,
                source,
                dataset_id="support-chats",
                name="Support chats",
                created_by=PUBLISHER.address,
            )
        else:
            bundle = update_bundle(bundle_dir, source)
        signed = log.append(bundle, PUBLISHER)
        assert publish_version(root, bundle_dir) == signed
        versions.append(signed)
        data[version] = source.read_bytes()
    return Published(root, versions, data)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    running = serve_in_background(app)
    try:
        yield f"http://127.0.0.1:{running.port}"
    finally:
        running.stop()
        assert not running.thread.is_alive()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenStore:
    return TokenStore(tmp_path_factory.mktemp("tokens") / "tokens.json")


@pytest.fixture(scope="module")
def base_url(published: Published, tokens: TokenStore) -> Iterator[str]:
    with serving(create_dataset_app(published.root, tokens)) as url:
        yield url


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- publishing -----------------------------------------------------------------------------


def test_publish_keeps_every_version_content_addressed(published: Published) -> None:
    for signed in published.versions:
        stored = artifact_path(published.root, signed.entry.artifact_sha256)
        assert stored.read_bytes() == published.data[signed.entry.version]
        assert stored.name == signed.entry.artifact_sha256.hex()
    served = VersionLog.load(published.root / VERSION_LOG_NAME)
    assert served.verify(PUBLISHER.address) == published.versions[-1]


def test_versions_is_public_and_verifies(base_url: str, published: Published) -> None:
    response = httpx.get(f"{base_url}/versions")
    assert response.status_code == 200
    assert response.content == (published.root / VERSION_LOG_NAME).read_bytes()
    log = fetch_version_log(base_url, expected_publisher=PUBLISHER.address)
    assert list(log.entries) == published.versions


# --- full and ranged downloads --------------------------------------------------------------


def test_full_download_has_the_signed_headers(
    base_url: str, published: Published, tokens: TokenStore
) -> None:
    token = tokens.issue("full", TokenScope.up_to(2))
    for signed in published.versions:
        entry = signed.entry
        response = httpx.get(f"{base_url}/versions/{entry.version}/artifact", headers=_auth(token))
        assert response.status_code == 200
        assert response.content == published.data[entry.version]
        assert response.headers["etag"] == f'"{entry.artifact_sha256.hex()}"'
        assert response.headers["x-content-sha256"] == entry.artifact_sha256.hex()
        assert response.headers["accept-ranges"] == "bytes"
        assert int(response.headers["content-length"]) == entry.artifact_size
        assert _sha(response.content) == entry.artifact_sha256.hex()


def test_ranges_206_416_and_if_range(
    base_url: str, published: Published, tokens: TokenStore
) -> None:
    token = tokens.issue("ranges", TokenScope.up_to(2))
    data = published.data[2]
    total = len(data)
    etag = f'"{_sha(data)}"'
    url = f"{base_url}/versions/2/artifact"
    cases = {
        "bytes=10-99": (10, 99),
        f"bytes={total - 100}-": (total - 100, total - 1),
        "bytes=-250": (total - 250, total - 1),
        f"bytes=5-{total + 1000}": (5, total - 1),  # end past the file is clamped
    }
    for header, (first, last) in cases.items():
        response = httpx.get(url, headers={**_auth(token), "Range": header})
        assert response.status_code == 206, header
        assert response.content == data[first : last + 1]
        assert response.headers["content-range"] == f"bytes {first}-{last}/{total}"
        assert int(response.headers["content-length"]) == last - first + 1
        assert response.headers["etag"] == etag
        assert response.headers["x-content-sha256"] == _sha(data)
        assert response.headers["accept-ranges"] == "bytes"

    unsatisfiable = httpx.get(url, headers={**_auth(token), "Range": f"bytes={total}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{total}"

    stale = httpx.get(url, headers={**_auth(token), "Range": "bytes=10-", "If-Range": '"00"'})
    assert stale.status_code == 200
    assert stale.content == data
    fresh = httpx.get(url, headers={**_auth(token), "Range": "bytes=10-", "If-Range": etag})
    assert fresh.status_code == 206
    assert fresh.content == data[10:]


def test_parse_range_rules() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-4", 10) == ByteRange(2, 4, 10)
    assert parse_range("bytes=-3", 10) == ByteRange(7, 9, 10)
    assert parse_range("bytes=-30", 10) == ByteRange(0, 9, 10)
    assert parse_range("bytes=0-1,4-5", 10) is None  # multiple ranges: whole file
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=5-2", 10) is None
    for header in ("bytes=10-", "bytes=-0", "bytes=12-20"):
        with pytest.raises(UnsatisfiableRangeError):
            parse_range(header, 10)


def test_range_numbers_of_any_length_are_read_without_converting_them(
    base_url: str, published: Published, tokens: TokenStore
) -> None:
    token = tokens.issue("huge-ranges", TokenScope.up_to(2))
    data = published.data[2]
    total = len(data)
    url = f"{base_url}/versions/2/artifact"
    huge = "9" * 5000  # past Python's int() limit of 4300 digits
    past = httpx.get(url, headers={**_auth(token), "Range": f"bytes={huge}-"})
    assert past.status_code == 416  # the first byte is past the end
    assert past.headers["content-range"] == f"bytes */{total}"
    for header, (first, last) in {
        f"bytes=0-{huge}": (0, total - 1),  # the last byte is clamped
        f"bytes=-{huge}": (0, total - 1),  # a suffix longer than the file is the file
        f"bytes={'0' * 5000}5-{'0' * 5000}9": (5, 9),  # leading zeros are only zeros
    }.items():
        response = httpx.get(url, headers={**_auth(token), "Range": header})
        assert response.status_code == 206, header[:20]
        assert response.headers["content-range"] == f"bytes {first}-{last}/{total}"
        assert response.content == data[first : last + 1]
    backwards = httpx.get(url, headers={**_auth(token), "Range": f"bytes={huge}-{huge[:-1]}"})
    assert backwards.status_code == 200 and backwards.content == data  # invalid: ignored


def _reference_range(header: str, total: int) -> ByteRange | None:
    """RFC 9110's reading of a single byte range, with exact integers."""
    match = re.fullmatch(r"bytes=([0-9]*)-([0-9]*)", header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    start, end = match.groups()
    if not start:
        if int(end) == 0 or total == 0:
            raise UnsatisfiableRangeError(header)
        return ByteRange(max(0, total - int(end)), total - 1, total)
    if end and int(end) < int(start):
        return None
    if int(start) >= total:
        raise UnsatisfiableRangeError(header)
    return ByteRange(int(start), total - 1 if not end else min(int(end), total - 1), total)


def _outcome(header: str, total: int) -> object:
    try:
        return parse_range(header, total)
    except UnsatisfiableRangeError:
        return "416"


_DIGITS = st.text(alphabet="0123456789", max_size=45)


@given(
    start=_DIGITS,
    end=_DIGITS,
    total=st.integers(0, 2**40) | st.integers(0, 20),
    zeros=st.integers(0, 30),
)
def test_parse_range_reads_numbers_as_rfc_9110_does(
    start: str, end: str, total: int, zeros: int
) -> None:
    for header in (f"bytes={start}-{end}", f"bytes={'0' * zeros}{start}-{end}"):
        try:
            expected: object = _reference_range(header, total)
        except UnsatisfiableRangeError:
            expected = "416"
        assert _outcome(header, total) == expected


@given(header=st.text(max_size=80), total=st.integers(0, 2**40))
def test_parse_range_only_ever_answers_a_range_none_or_416(header: str, total: int) -> None:
    result = _outcome(header, total)
    if isinstance(result, ByteRange):
        assert 0 <= result.first <= result.last < total == result.total


def test_unknown_version_is_404(base_url: str, tokens: TokenStore) -> None:
    token = tokens.issue("wide", TokenScope.up_to(99))
    response = httpx.get(f"{base_url}/versions/3/artifact", headers=_auth(token))
    assert response.status_code == 404


# --- tokens ---------------------------------------------------------------------------------


def test_token_errors_map_to_401_and_403(base_url: str, tokens: TokenStore) -> None:
    url = f"{base_url}/versions/{{}}/artifact"
    missing = httpx.get(url.format(1))
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url.format(1), headers=_auth("not-a-token")).status_code == 401
    assert httpx.get(url.format(1), headers={"Authorization": "Basic eDp5"}).status_code == 401

    v1_only = tokens.issue("v1-only", TokenScope.up_to(1))
    assert httpx.get(url.format(1), headers=_auth(v1_only)).status_code == 200
    refused = httpx.get(url.format(2), headers=_auth(v1_only))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "this token covers v1 only, not v2"
    wide = tokens.issue("up-to-2", TokenScope.up_to(2))
    beyond = httpx.get(url.format(3), headers=_auth(wide))
    assert beyond.status_code == 403
    assert beyond.json()["detail"] == "this token covers versions 1..2, not v3"

    revoked = tokens.issue("to-revoke", TokenScope.up_to(2))
    assert httpx.get(url.format(2), headers=_auth(revoked)).status_code == 200
    tokens.revoke("to-revoke")
    gone = httpx.get(url.format(2), headers=_auth(revoked))
    assert gone.status_code == 403
    assert gone.json()["detail"] == "this token was revoked by the publisher"


def test_a_version_outside_uint64_is_422_not_500(base_url: str, tokens: TokenStore) -> None:
    token = tokens.issue("huge-version", TokenScope.up_to(2))
    for number in ("0", "9" * 30, str(2**64), "9" * 5000):
        response = httpx.get(f"{base_url}/versions/{number}/artifact", headers=_auth(token))
        assert response.status_code == 422, number[:30]


def test_tokens_survive_a_restart(published: Published, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    first = TokenStore(path)
    kept = first.issue("kept", TokenScope.up_to(2))
    gone = first.issue("gone", TokenScope.up_to(2))
    with serving(create_dataset_app(published.root, first)) as url:
        assert httpx.get(f"{url}/versions/2/artifact", headers=_auth(gone)).status_code == 200
        first.revoke("gone")
        assert httpx.get(f"{url}/versions/2/artifact", headers=_auth(gone)).status_code == 403

    restarted = TokenStore(path)
    assert {(r.label, r.revoked) for r in restarted.list()} == {("kept", False), ("gone", True)}
    with serving(create_dataset_app(published.root, restarted)) as url:
        response = httpx.get(f"{url}/versions/2/artifact", headers=_auth(kept))
        assert response.status_code == 200
        assert response.content == published.data[2]
        assert httpx.get(f"{url}/versions/2/artifact", headers=_auth(gone)).status_code == 403
        assert httpx.get(f"{url}/versions/2/artifact").status_code == 401


def test_a_revocation_by_another_process_reaches_a_running_server(
    published: Published, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.json"
    served = TokenStore(path)
    token = served.issue("member", TokenScope.up_to(2))
    with serving(create_dataset_app(published.root, served)) as url:
        assert httpx.get(f"{url}/versions/1/artifact", headers=_auth(token)).status_code == 200
        TokenStore(path).revoke("member")  # e.g. the CLI, with its own store object
        assert httpx.get(f"{url}/versions/1/artifact", headers=_auth(token)).status_code == 403


# --- resumable downloads --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_resumes_an_interrupted_download(
    base_url: str, published: Published, tokens: TokenStore, tmp_path: Path
) -> None:
    token = tokens.issue("curl", TokenScope.up_to(2))
    entry = published.versions[1].entry
    data = published.data[2]
    partial = tmp_path / "part"
    partial.write_bytes(data[: len(data) // 2])
    curl = shutil.which("curl")
    assert curl is not None
    result = subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--fail",
            "-C",
            "-",
            "-o",
            str(partial),
            "--header",
            f"Authorization: Bearer {token}",
            "--dump-header",
            str(tmp_path / "headers"),
            f"{base_url}/versions/2/artifact",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    headers = (tmp_path / "headers").read_text()
    assert " 206" in headers.splitlines()[0]  # it really resumed
    assert f"bytes {len(data) // 2}-{len(data) - 1}/{len(data)}" in headers
    assert hashlib.sha256(partial.read_bytes()).digest() == entry.artifact_sha256
    assert partial.stat().st_size == entry.artifact_size


def test_download_version_resumes_a_part_and_verifies(
    base_url: str, published: Published, tokens: TokenStore, tmp_path: Path
) -> None:
    token = tokens.issue("client", TokenScope.up_to(2))
    signed = published.versions[1]
    data = published.data[2]
    dest = tmp_path / "v2.jsonl"
    part = part_path(dest)
    assert part.name == "v2.jsonl.part"
    half = len(data) // 2
    part.write_bytes(data[:half])
    seen: list[tuple[int, int]] = []
    assert download_version(
        base_url, 2, token, dest, signed, progress=lambda d, t: seen.append((d, t))
    ) == (dest)
    assert dest.read_bytes() == data
    assert not part.exists()
    assert seen[0] == (half, len(data))  # resumed, did not start over
    assert seen[-1] == (len(data), len(data))

    # A fresh download (no .part) of v1 with the bare entry works too.
    dest1 = tmp_path / "v1.jsonl"
    download_version(base_url, 1, token, dest1, published.versions[0].entry)
    assert dest1.read_bytes() == published.data[1]


def test_download_version_refusal_keeps_no_file(
    base_url: str, published: Published, tokens: TokenStore, tmp_path: Path
) -> None:
    token = tokens.issue("narrow", TokenScope.up_to(1))
    dest = tmp_path / "v2.jsonl"
    with pytest.raises(DownloadRefusedError) as caught:
        download_version(base_url, 2, token, dest, published.versions[1])
    assert caught.value.status == 403
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_a_part_planted_as_a_symlink_is_not_written_through(
    base_url: str, published: Published, tokens: TokenStore, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "v1.jsonl"
    part_path(dest).symlink_to(victim)  # planted by someone who can write to the directory
    token = tokens.issue("symlinked", TokenScope.up_to(1))
    with pytest.raises(DownloadError, match="symbolic link"):
        download_version(base_url, 1, token, dest, published.versions[0])
    assert victim.read_bytes() == b"precious" and not dest.exists()


def test_tampered_bytes_raise_and_leave_nothing(
    published: Published, tokens: TokenStore, tmp_path: Path
) -> None:
    root = tmp_path / "serve"
    shutil.copytree(published.root, root)
    signed = published.versions[1]
    stored = artifact_path(root, signed.entry.artifact_sha256)
    tampered = bytearray(stored.read_bytes())
    tampered[len(tampered) * 3 // 4] ^= 0x01  # same size, one flipped bit, in the second half
    stored.write_bytes(bytes(tampered))
    token = tokens.issue("tamper", TokenScope.up_to(2))
    with serving(create_dataset_app(root, tokens)) as url:
        # The server's own header still claims the signed hash: only the entry can tell.
        head = httpx.get(f"{url}/versions/2/artifact", headers=_auth(token))
        assert head.headers["x-content-sha256"] == signed.entry.artifact_sha256.hex()

        dest = tmp_path / "v2.jsonl"
        with pytest.raises(DownloadVerificationError):
            download_version(url, 2, token, dest, signed)
        assert not dest.exists()
        assert not part_path(dest).exists()

        # Resuming an honest first half onto tampered bytes is caught as well.
        part_path(dest).write_bytes(published.data[2][: len(tampered) // 2])
        with pytest.raises(DownloadVerificationError):
            download_version(url, 2, token, dest, signed)
        assert not dest.exists()
        assert not part_path(dest).exists()


def test_version_log_json_is_what_was_signed(base_url: str, published: Published) -> None:
    document = json.loads(httpx.get(f"{base_url}/versions").content)
    assert [v["version"] for v in document["versions"]] == [1, 2]
    assert document["versions"][1]["artifact_sha256"] == "0x" + _sha(published.data[2])


# --- file modes -----------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a 0o644 open really makes a world-readable file."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_downloads_are_private_fresh_or_resumed(
    base_url: str, published: Published, tokens: TokenStore, tmp_path: Path
) -> None:
    token = tokens.issue("modes", TokenScope.up_to(2))
    fresh = tmp_path / "v1.jsonl"
    download_version(base_url, 1, token, fresh, published.versions[0])
    assert _mode(fresh) == 0o600

    resumed = tmp_path / "v2.jsonl"
    part = part_path(resumed)
    part.write_bytes(published.data[2][:1000])
    part.chmod(0o644)  # as an older client left it
    download_version(base_url, 2, token, resumed, published.versions[1])
    assert resumed.read_bytes() == published.data[2]
    assert _mode(resumed) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_published_and_bundled_artifacts_are_private(tmp_path: Path) -> None:
    source = tmp_path / "v1.jsonl"
    write_jsonl(source, _records(1, 5))
    bundle_dir, root = tmp_path / "bundle", tmp_path / "serve"
    bundle = init_bundle(
        bundle_dir, source, dataset_id="modes", name="Modes", created_by=PUBLISHER.address
    )
    head = VersionLog.open(bundle_dir / VERSION_LOG_NAME).append(bundle, PUBLISHER)
    assert _mode(bundle.artifact_path) == 0o600
    publish_version(root, bundle_dir)
    stored = artifact_path(root, head.entry.artifact_sha256)
    assert _mode(stored) == 0o600
    stored.chmod(0o644)  # published by an older version: publishing again narrows it
    publish_version(root, bundle_dir)
    assert _mode(stored) == 0o600
    write_jsonl(source, _records(2, 5))
    assert _mode(update_bundle(bundle_dir, source).artifact_path) == 0o600


def _hostile(body: bytes, status: int) -> FastAPI:
    """A server that answers everything with ``status`` and ``body``."""
    app = FastAPI()

    @app.get("/{path:path}")
    def anything(path: str) -> Response:
        return Response(body, status, media_type="application/json")

    return app


def test_the_client_reads_no_more_of_an_answer_than_it_needs(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "MAX_LOG_BYTES", 1000)
    monkeypatch.setattr(client, "MAX_ANSWER_BYTES", 1000)
    long_log = _hostile(b" " * 5000, 200)
    with serving(long_log) as url, pytest.raises(DownloadError, match="longer than 1000 bytes"):
        fetch_version_log(url)
    # An error's detail is read up to the cap only: a longer one is left out, not echoed.
    long_detail = _hostile(json.dumps({"detail": "x" * 5000}).encode(), 403)
    with serving(long_detail) as url, pytest.raises(DownloadRefusedError) as refused:
        download_version(url, 1, "t", tmp_path / "v1", published.versions[0])
    assert str(refused.value) == "the token does not open this version"
