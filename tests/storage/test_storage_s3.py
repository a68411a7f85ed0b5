"""``S3Store`` against a real S3 API (moto's server on loopback): layout, multipart, integrity."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import boto3
import pytest

from cotune.storage import (
    BlobIntegrityError,
    BlobNotFoundError,
    BlobRef,
    S3Store,
    StorageError,
    open_store,
)
from cotune.storage.blob import READ_BLOCK

MIB = 1 << 20
PART = 5 * MIB  # the S3 minimum part size
REGION = "us-east-1"
MISSING = BlobRef("cd" * 32, 10)


def _ref_of(data: bytes) -> BlobRef:
    return BlobRef(hashlib.sha256(data).hexdigest(), len(data))


def _keys(client, bucket: str, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


class CallCounter:
    """Counts the S3 API operations a boto3 client makes."""

    def __init__(self, client) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.s3.*", self._record)

    def _record(self, model, **_: object) -> None:
        self.calls.append(model.name)

    def uploads(self) -> list[str]:
        return [
            name
            for name in self.calls
            if name in {"PutObject", "CreateMultipartUpload", "UploadPart"}
        ]


def test_put_get_round_trip(s3_store: S3Store) -> None:
    data = os.urandom(READ_BLOCK + 4321)
    ref = s3_store.put(data)
    assert ref == _ref_of(data)
    assert s3_store.get_bytes(ref) == data
    s3_store.verify(ref)


def test_object_key_layout(s3_store: S3Store, s3_client, s3_bucket: str, s3_prefix: str) -> None:
    ref = s3_store.put(b"layout")
    expected = f"{s3_prefix}/blobs/{ref.cid[:2]}/{ref.cid}"
    assert s3_store.key_of(ref.cid) == expected
    assert s3_store.key_of("sha256:" + ref.cid.upper()) == expected
    assert _keys(s3_client, s3_bucket, s3_prefix.split("/")[0]) == [expected]
    body = s3_client.get_object(Bucket=s3_bucket, Key=expected)["Body"].read()
    assert body == b"layout"


def test_key_layout_without_prefix(s3_endpoint: str, s3_client) -> None:
    s3_client.create_bucket(Bucket="cotune-no-prefix")
    store = S3Store("cotune-no-prefix", "/", endpoint_url=s3_endpoint, region_name=REGION)
    assert store.url == "s3://cotune-no-prefix"
    ref = store.put(b"top level")
    assert _keys(s3_client, "cotune-no-prefix", "") == [f"blobs/{ref.cid[:2]}/{ref.cid}"]


def test_url_and_prefix_normalisation(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(s3_bucket, "/a/b/", endpoint_url=s3_endpoint, region_name=REGION)
    assert store.prefix == "a/b"
    assert store.url == f"s3://{s3_bucket}/a/b"


def test_empty_bucket_name_is_rejected() -> None:
    with pytest.raises(StorageError):
        S3Store("", "x", region_name=REGION)


def test_open_store_url_with_endpoint_and_region(
    s3_endpoint: str, s3_bucket: str, s3_client
) -> None:
    prefix = f"factory-{os.urandom(4).hex()}/nested"
    store = open_store(f"s3://{s3_bucket}/{prefix}?endpoint_url={s3_endpoint}&region={REGION}")
    assert isinstance(store, S3Store)
    assert store.bucket == s3_bucket
    assert store.prefix == prefix
    assert store.url == f"s3://{s3_bucket}/{prefix}"
    data = os.urandom(2048)
    ref = store.put(data)
    assert store.get_bytes(ref) == data
    # The bytes really went to the server named by endpoint_url, under the prefix.
    key = f"{prefix}/blobs/{ref.cid[:2]}/{ref.cid}"
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data


def test_multipart_upload_for_blob_above_part_size(
    s3_endpoint: str, s3_bucket: str, s3_prefix: str, s3_client
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    counter = CallCounter(client)
    store = S3Store(s3_bucket, s3_prefix, part_size=PART, client=client)
    data = os.urandom(12 * MIB)
    seen: list[int] = []
    ref = store.put(data, progress=seen.append)
    assert ref == _ref_of(data)
    assert sum(seen) == len(data)
    assert "CreateMultipartUpload" in counter.calls
    assert counter.calls.count("UploadPart") == 3
    head = s3_client.head_object(Bucket=s3_bucket, Key=store.key_of(ref.cid))
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")
    assert store.get_bytes(ref) == data


def test_small_blob_is_a_single_put(
    s3_endpoint: str, s3_bucket: str, s3_prefix: str, s3_client
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    counter = CallCounter(client)
    store = S3Store(s3_bucket, s3_prefix, part_size=PART, client=client)
    ref = store.put(os.urandom(PART - 1))
    assert counter.uploads() == ["PutObject"]
    head = s3_client.head_object(Bucket=s3_bucket, Key=store.key_of(ref.cid))
    assert "-" not in head["ETag"]


def test_non_seekable_source_is_spooled(
    s3_endpoint: str, s3_bucket: str, s3_prefix: str, nonseekable
) -> None:
    store = S3Store(
        s3_bucket, s3_prefix, endpoint_url=s3_endpoint, region_name=REGION, part_size=PART
    )
    data = os.urandom(PART + 3 * READ_BLOCK // 2)
    stream = nonseekable(data, 100_000)
    with pytest.raises(OSError):
        stream.tell()  # the store cannot cheat by rewinding this stream
    ref = store.put(stream)
    assert ref == _ref_of(data)
    assert store.get_bytes(ref) == data


def test_put_reads_from_the_current_position(s3_store: S3Store) -> None:
    stream = io.BytesIO(b"HEADER" + b"payload after the header")
    stream.seek(6)
    ref = s3_store.put(stream)
    assert ref == _ref_of(b"payload after the header")
    assert s3_store.get_bytes(ref) == b"payload after the header"


def test_put_file(s3_store: S3Store, tmp_path: Path) -> None:
    data = os.urandom(3000)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    ref = s3_store.put_file(source)
    assert ref == _ref_of(data)
    assert s3_store.get_bytes(ref) == data


def test_empty_blob(s3_store: S3Store) -> None:
    ref = s3_store.put(b"")
    assert ref == _ref_of(b"")
    assert s3_store.get_bytes(ref) == b""
    assert s3_store.stat(ref.cid) == ref


def test_reput_is_idempotent_and_skips_the_upload(
    s3_endpoint: str, s3_bucket: str, s3_prefix: str, s3_client
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    counter = CallCounter(client)
    store = S3Store(s3_bucket, s3_prefix, client=client)
    data = os.urandom(4096)
    first = store.put(data)
    assert counter.uploads() == ["PutObject"]
    seen: list[int] = []
    second = store.put(io.BytesIO(data), progress=seen.append)
    assert second == first
    assert counter.uploads() == ["PutObject"]  # no second upload
    assert sum(seen) == len(data)
    assert _keys(s3_client, s3_bucket, s3_prefix) == [store.key_of(first.cid)]


def test_reput_replaces_an_object_of_the_wrong_size(
    s3_store: S3Store, s3_client, s3_bucket: str
) -> None:
    data = os.urandom(1000)
    ref = s3_store.put(data)
    s3_client.put_object(Bucket=s3_bucket, Key=s3_store.key_of(ref.cid), Body=data[:10])
    with pytest.raises(BlobIntegrityError):
        s3_store.verify(ref)
    assert s3_store.put(data) == ref
    assert s3_store.get_bytes(ref) == data


@pytest.mark.parametrize("how", ["same-size", "shorter", "longer"])
def test_corrupt_object_is_detected(
    s3_store: S3Store, s3_client, s3_bucket: str, tmp_path: Path, how: str
) -> None:
    data = os.urandom(READ_BLOCK + 500)
    ref = s3_store.put(data)
    tampered = {
        "same-size": data[:-1] + bytes([data[-1] ^ 1]),
        "shorter": data[:-1],
        "longer": data + b"!",
    }[how]
    s3_client.put_object(Bucket=s3_bucket, Key=s3_store.key_of(ref.cid), Body=tampered)
    with pytest.raises(BlobIntegrityError, match=ref.cid), s3_store.open(ref) as reader:
        reader.read()
    with pytest.raises(BlobIntegrityError):
        s3_store.get_bytes(ref)
    with pytest.raises(BlobIntegrityError):
        s3_store.verify(ref)
    destination = tmp_path / "out" / "blob.bin"
    destination.parent.mkdir()
    with pytest.raises(BlobIntegrityError):
        s3_store.download(ref, destination)
    assert list(destination.parent.iterdir()) == []


@pytest.fixture
def s3_ranged(s3_store: S3Store) -> tuple[S3Store, BlobRef, bytes]:
    data = os.urandom(READ_BLOCK + 1000)
    return s3_store, s3_store.put(data), data


def test_open_range(s3_ranged) -> None:
    store, ref, data = s3_ranged
    cases = [
        (0, 1),
        (0, 100),
        (17, 4000),
        (READ_BLOCK - 10, 20),
        (ref.size - 1, 1),
        (0, ref.size),
        (0, 0),
        (ref.size, 0),
    ]
    for start, length in cases:
        with store.open_range(ref, start, length) as reader:
            got = reader.read()
        assert got == data[start : start + length], (start, length)


def test_open_range_uses_range_requests(s3_endpoint: str, s3_bucket: str, s3_prefix: str) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    ranges: list[str] = []
    client.meta.events.register(
        "before-parameter-build.s3.GetObject",
        lambda params, **_: ranges.append(params.get("Range")),
    )
    store = S3Store(s3_bucket, s3_prefix, client=client)
    data = os.urandom(10_000)
    ref = store.put(data)
    with store.open_range(ref, 100, 50) as reader:
        assert reader.read() == data[100:150]
    assert ranges == ["bytes=100-149"]


@pytest.mark.parametrize(("start", "length"), [(-1, 1), (0, -1), (0, 10_001), (10_000, 1)])
def test_open_range_out_of_bounds(s3_store: S3Store, start: int, length: int) -> None:
    ref = s3_store.put(os.urandom(10_000))
    with pytest.raises(ValueError, match="outside"):
        s3_store.open_range(ref, start, length)


def test_stat_and_exists(s3_store: S3Store) -> None:
    ref = s3_store.put(b"stat me")
    assert s3_store.stat(ref.cid) == ref
    assert s3_store.stat("sha256:" + ref.cid) == ref
    assert s3_store.exists(ref.cid)
    assert not s3_store.exists(MISSING.cid)


def test_missing_blob(s3_store: S3Store, tmp_path: Path) -> None:
    with pytest.raises(BlobNotFoundError, match=MISSING.cid):
        s3_store.open(MISSING)
    with pytest.raises(BlobNotFoundError, match=MISSING.cid):
        s3_store.stat(MISSING.cid)
    with pytest.raises(BlobNotFoundError, match=MISSING.cid):
        s3_store.open_range(MISSING, 0, 5)
    with pytest.raises(BlobNotFoundError):
        s3_store.download(MISSING, tmp_path / "never.bin")
    assert not (tmp_path / "never.bin").exists()


def test_missing_bucket_is_a_storage_error(s3_endpoint: str) -> None:
    store = S3Store("cotune-no-such-bucket", endpoint_url=s3_endpoint, region_name=REGION)
    with pytest.raises(StorageError):
        store.put(b"nowhere to go")


def test_download_progress_sums_to_size(s3_store: S3Store, tmp_path: Path) -> None:
    data = os.urandom(2 * READ_BLOCK + 17)
    ref = s3_store.put(data)
    seen: list[int] = []
    s3_store.download(ref, tmp_path / "copy.bin", progress=seen.append)
    assert sum(seen) == len(data)
    assert (tmp_path / "copy.bin").read_bytes() == data
