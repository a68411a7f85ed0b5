"""``open_store``: which backend a storage URL names, and which URLs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cotune.storage import LocalStore, S3Store, StorageConfigError, open_store


def test_file_url_opens_local_store(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = open_store(f"file://{root}")
    assert isinstance(store, LocalStore)
    assert store.root == root.resolve()
    assert (root / "objects").is_dir()


def test_file_url_of_localhost(tmp_path: Path) -> None:
    store = open_store(f"file://localhost{tmp_path / 'blobs'}")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "blobs").resolve()


def test_file_url_is_percent_decoded(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/with%20space")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "with space").resolve()


def test_store_url_round_trips(tmp_path: Path) -> None:
    first = open_store(str(tmp_path / "a b"))
    second = open_store(first.url)
    assert isinstance(second, LocalStore)
    assert second.root == first.root
    ref = first.put(b"shared")
    assert second.get_bytes(ref) == b"shared"


def test_bare_absolute_path_opens_local_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "plain"))
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "plain").resolve()


def test_bare_relative_path_is_relative_to_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("relative/dir")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "relative" / "dir").resolve()


def test_file_url_with_host_is_rejected(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageConfigError, match="host"):
        open_store("file://somehost/var/blobs")
    assert list(tmp_path.iterdir()) == []


def test_s3_url_opens_s3_store() -> None:
    store = open_store("s3://bucket/some/prefix?region=eu-west-1")
    assert isinstance(store, S3Store)
    assert store.bucket == "bucket"
    assert store.prefix == "some/prefix"
    assert store.url == "s3://bucket/some/prefix"


def test_s3_unknown_option_is_rejected() -> None:
    with pytest.raises(StorageConfigError, match="colour"):
        open_store("s3://bucket/prefix?region=us-east-1&colour=blue")


@pytest.mark.parametrize("url", ["0g://x", "0g://bucket/path?x=1"])
def test_0g_url_is_rejected(url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # so a wrong fallback to a local path cannot litter the repo
    with pytest.raises(StorageConfigError, match="0G"):
        open_store(url)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["ftp://x", "http://example.com/blobs", "gs://bucket/p"])
def test_unsupported_scheme_is_rejected(url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageConfigError, match="unsupported"):
        open_store(url)
    assert list(tmp_path.iterdir()) == []


def test_empty_url_is_rejected(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # an empty path would otherwise mean the current directory
    with pytest.raises(StorageConfigError, match="empty"):
        open_store("")
    assert list(tmp_path.iterdir()) == []
