"""The gated dataset server over real HTTP (uvicorn), member tokens, and resumable downloads."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from fastapi import FastAPI

from cotune.common.serving import serve_in_background
from cotune.dataset.bundle import init_bundle, update_bundle
from cotune.dataset.client import (
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
from cotune.dataset.tokens import (
    DuplicateLabelError,
    NoSuchTokenError,
    RevokedTokenError,
    ScopeError,
    TokenStore,
    UnknownTokenError,
    hash_token,
)
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
    token = tokens.issue("full", 2)
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
    token = tokens.issue("ranges", 2)
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


def test_unknown_version_is_404(base_url: str, tokens: TokenStore) -> None:
    token = tokens.issue("wide", 99)
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

    v1_only = tokens.issue("v1-only", 1)
    assert httpx.get(url.format(1), headers=_auth(v1_only)).status_code == 200
    assert httpx.get(url.format(2), headers=_auth(v1_only)).status_code == 403

    revoked = tokens.issue("to-revoke", 2)
    assert httpx.get(url.format(2), headers=_auth(revoked)).status_code == 200
    tokens.revoke("to-revoke")
    assert httpx.get(url.format(2), headers=_auth(revoked)).status_code == 403


def test_token_store_errors_are_distinct(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.issue("alice", 1)
    assert store.check(token, 1).label == "alice"
    with pytest.raises(UnknownTokenError):
        store.check("nope", 1)
    with pytest.raises(UnknownTokenError):
        store.check(None, 1)
    with pytest.raises(ScopeError):
        store.check(token, 2)
    with pytest.raises(DuplicateLabelError):
        store.issue("alice", 3)
    with pytest.raises(NoSuchTokenError):
        store.revoke("bob")
    assert store.revoke(hash_token(token)).revoked
    with pytest.raises(RevokedTokenError):
        store.check(token, 1)
    text = (tmp_path / "tokens.json").read_text()
    assert token not in text
    assert hash_token(token) in text
    assert [r.label for r in store.list()] == ["alice"]


def test_tokens_survive_a_restart(published: Published, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    first = TokenStore(path)
    kept = first.issue("kept", 2)
    gone = first.issue("gone", 2)
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
    token = served.issue("member", 2)
    with serving(create_dataset_app(published.root, served)) as url:
        assert httpx.get(f"{url}/versions/1/artifact", headers=_auth(token)).status_code == 200
        TokenStore(path).revoke("member")  # e.g. the CLI, with its own store object
        assert httpx.get(f"{url}/versions/1/artifact", headers=_auth(token)).status_code == 403


# --- resumable downloads --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_resumes_an_interrupted_download(
    base_url: str, published: Published, tokens: TokenStore, tmp_path: Path
) -> None:
    token = tokens.issue("curl", 2)
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
    token = tokens.issue("client", 2)
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
    token = tokens.issue("narrow", 1)
    dest = tmp_path / "v2.jsonl"
    with pytest.raises(DownloadRefusedError) as caught:
        download_version(base_url, 2, token, dest, published.versions[1])
    assert caught.value.status == 403
    assert not dest.exists()
    assert not part_path(dest).exists()


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
    token = tokens.issue("tamper", 2)
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
