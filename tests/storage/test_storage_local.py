"""``LocalStore``: atomic idempotent puts, sharded layout, and reads that catch corruption."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from cotune.storage import (
    BlobIntegrityError,
    BlobNotFoundError,
    BlobRef,
    LocalStore,
    StorageError,
)
from cotune.storage.blob import READ_BLOCK

EMPTY_CID = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
MISSING = BlobRef("ab" * 32, 10)


def _ref_of(data: bytes) -> BlobRef:
    return BlobRef(hashlib.sha256(data).hexdigest(), len(data))


def _objects(store: LocalStore) -> list[Path]:
    return sorted(p for p in (store.root / "objects").rglob("*") if p.is_file())


def _tmp_entries(store: LocalStore) -> list[str]:
    return sorted(p.name for p in (store.root / "tmp").iterdir())


class FailingReader(io.RawIOBase):
    """Hands out ``fail_after`` bytes, then raises ``OSError`` like a dropped network read."""

    def __init__(self, fail_after: int, tmp_dir: Path) -> None:
        super().__init__()
        self._left = fail_after
        self._tmp_dir = tmp_dir
        self.tmp_seen_at_failure: list[str] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._left == 0:
            self.tmp_seen_at_failure = sorted(p.name for p in self._tmp_dir.iterdir())
            raise OSError(5, "simulated read failure")
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._left)
        view[:count] = b"\x5a" * count
        self._left -= count
        return count


# --- put ---------------------------------------------------------------------------------


def test_put_bytes_returns_sha256_and_size(store: LocalStore) -> None:
    data = os.urandom(3000)
    ref = store.put(data)
    assert ref == BlobRef(hashlib.sha256(data).hexdigest(), 3000)
    assert store.get_bytes(ref) == data


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_put_accepts_bytes_like(store: LocalStore, kind: type) -> None:
    data = os.urandom(100)
    assert store.put(kind(data)) == _ref_of(data)


def test_put_from_file_stream(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(2 * READ_BLOCK + 77)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    with source.open("rb") as handle:
        ref = store.put(handle)
    assert ref == _ref_of(data)
    assert store.put_file(source) == ref
    assert store.get_bytes(ref) == data


def test_put_reads_from_the_current_position(store: LocalStore) -> None:
    stream = io.BytesIO(b"HEADER" + b"payload")
    stream.seek(6)
    ref = store.put(stream)
    assert ref == _ref_of(b"payload")
    assert store.get_bytes(ref) == b"payload"


def test_put_from_non_seekable_stream(store: LocalStore, nonseekable) -> None:
    data = os.urandom(READ_BLOCK + 4321)
    ref = store.put(nonseekable(data, 10_000))
    assert ref == _ref_of(data)
    assert store.get_bytes(ref) == data


def test_put_is_idempotent(store: LocalStore) -> None:
    data = os.urandom(5000)
    first = store.put(data)
    second = store.put(io.BytesIO(data))
    assert first == second
    assert _objects(store) == [store.path_of(first.cid)]
    assert store.path_of(first.cid).read_bytes() == data
    assert _tmp_entries(store) == []


def test_distinct_blobs_are_stored_separately(store: LocalStore) -> None:
    refs = {data: store.put(data) for data in (bytes([n]) * 10 for n in range(5))}
    assert len(set(refs.values())) == 5
    assert len(_objects(store)) == 5
    for data, ref in refs.items():
        assert store.get_bytes(ref) == data


def test_empty_blob(store: LocalStore) -> None:
    ref = store.put(b"")
    assert ref == BlobRef(EMPTY_CID, 0)
    assert store.get_bytes(ref) == b""
    assert store.path_of(ref.cid).stat().st_size == 0
    assert store.stat(EMPTY_CID) == ref
    assert store.exists(EMPTY_CID)
    with store.open_range(ref, 0, 0) as reader:
        assert reader.read() == b""
    store.verify(ref)


def test_sharded_layout(store: LocalStore) -> None:
    ref = store.put(b"layout")
    cid = ref.cid
    expected = store.root / "objects" / cid[:2] / cid[2:4] / cid
    assert store.path_of(cid) == expected
    assert store.path_of("sha256:" + cid.upper()) == expected
    assert expected.read_bytes() == b"layout"
    assert _objects(store) == [expected]


def test_path_of_rejects_malformed_cid(store: LocalStore) -> None:
    with pytest.raises(ValueError):
        store.path_of("../../../etc/passwd")


def test_url_is_file_uri_of_resolved_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "a" / ".." / "b")
    assert store.root == (tmp_path / "b").resolve()
    assert store.url == (tmp_path / "b").resolve().as_uri()
    assert (store.root / "objects").is_dir()
    assert (store.root / "tmp").is_dir()


def test_root_that_is_a_file_raises_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"x")
    with pytest.raises(StorageError):
        LocalStore(blocker)


def test_nothing_left_in_tmp_after_put(store: LocalStore) -> None:
    store.put(os.urandom(READ_BLOCK + 1))
    store.put(b"")
    assert _tmp_entries(store) == []


def test_put_of_failing_source_leaves_no_blob_and_no_temp(store: LocalStore) -> None:
    reader = FailingReader(2 * READ_BLOCK + 100, store.root / "tmp")
    with pytest.raises(OSError, match="simulated"):
        store.put(reader)
    # The upload was in flight in tmp/ when the source failed...
    assert reader.tmp_seen_at_failure is not None
    assert len(reader.tmp_seen_at_failure) == 1
    # ...and neither it nor any blob survives.
    assert _tmp_entries(store) == []
    assert _objects(store) == []
    partial = b"\x5a" * (2 * READ_BLOCK + 100)
    assert not store.exists(_ref_of(partial).cid)


def test_put_interrupted_by_progress_leaves_nothing(store: LocalStore) -> None:
    def progress(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put(os.urandom(100), progress=progress)
    assert _tmp_entries(store) == []
    assert _objects(store) == []


def test_put_progress_sums_to_size(store: LocalStore) -> None:
    seen: list[int] = []
    data = os.urandom(2 * READ_BLOCK + 5)
    store.put(data, progress=seen.append)
    assert sum(seen) == len(data)
    assert len(seen) == 3


# --- reads -------------------------------------------------------------------------------


def test_open_streams_in_small_reads(store: LocalStore) -> None:
    data = os.urandom(READ_BLOCK + 999)
    ref = store.put(data)
    pieces = []
    with store.open(ref) as reader:
        while piece := reader.read(65_537):
            pieces.append(piece)
    assert b"".join(pieces) == data


def test_overlong_blob_fails_before_its_end(store: LocalStore) -> None:
    # A stored file longer than the ref must fail as soon as a read passes ref.size,
    # without the consumer having to drain the whole (possibly huge) stream first.
    ref = store.put(b"0123456789")
    with store.path_of(ref.cid).open("ab") as handle:
        handle.write(os.urandom(READ_BLOCK))
    with pytest.raises(BlobIntegrityError, match="longer"), store.open(ref) as reader:
        reader.read(ref.size + 1)


def test_get_bytes_checks_the_ref_size(store: LocalStore) -> None:
    data = b"exact size"
    ref = store.put(data)
    with pytest.raises(BlobIntegrityError):
        store.get_bytes(BlobRef(ref.cid, ref.size + 1))
    with pytest.raises(BlobIntegrityError):
        store.get_bytes(BlobRef(ref.cid, ref.size - 1))


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip-first":
        data[0] ^= 0x01
    elif how == "flip-middle":
        data[len(data) // 2] ^= 0x80
    elif how == "flip-last":
        data[-1] ^= 0x01
    elif how == "truncate":
        del data[-1]
    elif how == "append":
        data += b"\x00"
    else:  # pragma: no cover
        raise AssertionError(how)
    path.write_bytes(bytes(data))


CORRUPTIONS = ["flip-first", "flip-middle", "flip-last", "truncate", "append"]
SIZES = [10, READ_BLOCK + 1234]


def _read_all(store: LocalStore, ref: BlobRef, tmp_path: Path) -> None:
    with store.open(ref) as reader:
        reader.read()


def _read_chunks(store: LocalStore, ref: BlobRef, tmp_path: Path) -> None:
    with store.open(ref) as reader:
        while reader.read(4096):
            pass


def _get_bytes(store: LocalStore, ref: BlobRef, tmp_path: Path) -> None:
    store.get_bytes(ref)


def _verify(store: LocalStore, ref: BlobRef, tmp_path: Path) -> None:
    store.verify(ref)


READERS = {
    "open-read": _read_all,
    "open-chunks": _read_chunks,
    "get_bytes": _get_bytes,
    "verify": _verify,
}


@pytest.mark.parametrize("size", SIZES, ids=["small", "multi-block"])
@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("read", list(READERS.values()), ids=list(READERS))
def test_corruption_on_disk_is_detected(
    store: LocalStore, tmp_path: Path, size: int, how: str, read
) -> None:
    ref = store.put(os.urandom(size))
    _corrupt(store.path_of(ref.cid), how)
    with pytest.raises(BlobIntegrityError, match=ref.cid):
        read(store, ref, tmp_path)


@pytest.mark.parametrize("size", SIZES, ids=["small", "multi-block"])
@pytest.mark.parametrize("how", CORRUPTIONS)
def test_download_of_corrupt_blob_leaves_no_file(
    store: LocalStore, tmp_path: Path, size: int, how: str
) -> None:
    ref = store.put(os.urandom(size))
    _corrupt(store.path_of(ref.cid), how)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    destination = out_dir / "blob.bin"
    with pytest.raises(BlobIntegrityError):
        store.download(ref, destination)
    assert not destination.exists()
    assert list(out_dir.iterdir()) == []


def test_download_of_corrupt_blob_keeps_previous_destination(
    store: LocalStore, tmp_path: Path
) -> None:
    ref = store.put(b"good bytes")
    _corrupt(store.path_of(ref.cid), "flip-middle")
    destination = tmp_path / "blob.bin"
    destination.write_bytes(b"previous")
    with pytest.raises(BlobIntegrityError):
        store.download(ref, destination)
    assert destination.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "store"]


def test_reput_heals_a_corrupt_blob(store: LocalStore) -> None:
    data = os.urandom(1000)
    ref = store.put(data)
    _corrupt(store.path_of(ref.cid), "flip-middle")
    with pytest.raises(BlobIntegrityError):
        store.verify(ref)
    assert store.put(data) == ref
    store.verify(ref)
    assert store.get_bytes(ref) == data


def test_download_writes_verified_copy(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(2 * READ_BLOCK + 3)
    ref = store.put(data)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    destination = out_dir / "copy.bin"
    store.download(ref, destination)
    assert destination.read_bytes() == data
    assert [p.name for p in out_dir.iterdir()] == ["copy.bin"]


def test_download_progress_sums_to_size(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(2 * READ_BLOCK + READ_BLOCK // 2)
    ref = store.put(data)
    seen: list[int] = []
    store.download(ref, tmp_path / "copy.bin", progress=seen.append)
    assert sum(seen) == ref.size == len(data)
    assert len(seen) >= 3
    assert all(step > 0 for step in seen)


def test_download_of_empty_blob(store: LocalStore, tmp_path: Path) -> None:
    ref = store.put(b"")
    seen: list[int] = []
    store.download(ref, tmp_path / "empty.bin", progress=seen.append)
    assert (tmp_path / "empty.bin").read_bytes() == b""
    assert sum(seen) == 0


# --- ranges ------------------------------------------------------------------------------

RANGE_DATA_SIZE = 2 * READ_BLOCK + 100


@pytest.fixture
def ranged(store: LocalStore) -> tuple[LocalStore, BlobRef, bytes]:
    data = os.urandom(RANGE_DATA_SIZE)
    return store, store.put(data), data


@pytest.mark.parametrize(
    ("start", "length"),
    [
        (0, 1),
        (0, 100),
        (5, 17),
        (READ_BLOCK - 10, 20),  # across a block boundary
        (READ_BLOCK, READ_BLOCK),
        (RANGE_DATA_SIZE - 1, 1),
        (0, RANGE_DATA_SIZE),
        (0, 0),
        (12345, 0),
        (RANGE_DATA_SIZE, 0),
    ],
)
def test_open_range_returns_exact_bytes(ranged, start: int, length: int) -> None:
    store, ref, data = ranged
    with store.open_range(ref, start, length) as reader:
        got = reader.read()
    assert got == data[start : start + length]
    assert len(got) == length


def test_open_range_in_small_reads(ranged) -> None:
    store, ref, data = ranged
    pieces = []
    with store.open_range(ref, 1000, READ_BLOCK) as reader:
        while piece := reader.read(7777):
            pieces.append(piece)
    assert b"".join(pieces) == data[1000 : 1000 + READ_BLOCK]


@pytest.mark.parametrize(
    ("start", "length"),
    [
        (-1, 1),
        (0, -1),
        (0, RANGE_DATA_SIZE + 1),
        (RANGE_DATA_SIZE, 1),
        (RANGE_DATA_SIZE + 1, 0),
        (RANGE_DATA_SIZE - 5, 6),
    ],
)
def test_open_range_out_of_bounds_raises(ranged, start: int, length: int) -> None:
    store, ref, _ = ranged
    with pytest.raises(ValueError, match="outside"):
        store.open_range(ref, start, length)


def test_open_range_of_truncated_blob_is_integrity_error(ranged) -> None:
    store, ref, _ = ranged
    path = store.path_of(ref.cid)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BlobIntegrityError), store.open_range(ref, 50, 100) as reader:
        reader.read()


# --- stat, exists, missing blobs ---------------------------------------------------------


def test_stat_and_exists(store: LocalStore) -> None:
    ref = store.put(b"stat me")
    assert store.stat(ref.cid) == ref
    assert store.stat("sha256:" + ref.cid.upper()) == ref
    assert store.exists(ref.cid)
    assert store.exists("sha256:" + ref.cid)
    assert not store.exists(MISSING.cid)


def test_stat_and_exists_reject_malformed_cid(store: LocalStore) -> None:
    with pytest.raises(ValueError):
        store.stat("../objects")
    with pytest.raises(ValueError):
        store.exists("not-a-cid")


def test_missing_blob(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(BlobNotFoundError, match=MISSING.cid):
        store.open(MISSING)
    with pytest.raises(BlobNotFoundError, match=MISSING.cid):
        store.stat(MISSING.cid)
    with pytest.raises(BlobNotFoundError, match=MISSING.cid):
        store.open_range(MISSING, 0, 5)
    with pytest.raises(BlobNotFoundError):
        store.get_bytes(MISSING)
    with pytest.raises(BlobNotFoundError):
        store.download(MISSING, tmp_path / "never.bin")
    assert not (tmp_path / "never.bin").exists()


def test_errors_share_the_storage_base_class() -> None:
    assert issubclass(BlobNotFoundError, StorageError)
    assert issubclass(BlobIntegrityError, StorageError)
