"""Fixtures of the storage tests: a local store, a loopback S3 server, and odd source streams."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from cotune.storage import LocalStore, S3Store

MIB = 1 << 20
REGION = "us-east-1"


class NonSeekableStream(io.RawIOBase):
    """A raw stream fed by an iterator of chunks; it cannot seek or tell."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """Split ``data`` into pieces of ``size`` bytes (a generator: consumable once)."""
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


@pytest.fixture
def nonseekable() -> Callable[[bytes, int], NonSeekableStream]:
    """Build a generator-backed, non-seekable stream of ``data`` in chunks of ``size``."""

    def make(data: bytes, size: int = 64 * 1024) -> NonSeekableStream:
        return NonSeekableStream(chunked(data, size))

    return make


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback, with dummy credentials in the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        patch.setenv("no_proxy", "127.0.0.1,localhost")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint: str) -> str:
    name = "cotune-test-blobs"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_client(s3_endpoint: str):  # -> S3Client
    """A plain boto3 client on the test server, for inspecting and tampering with objects."""
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)


@pytest.fixture
def s3_prefix() -> str:
    """A fresh key prefix, so every test sees an empty store."""
    return f"run-{uuid.uuid4().hex[:12]}/blobs-root"


@pytest.fixture
def s3_store(s3_endpoint: str, s3_bucket: str, s3_prefix: str) -> S3Store:
    return S3Store(s3_bucket, s3_prefix, endpoint_url=s3_endpoint, region_name=REGION)
