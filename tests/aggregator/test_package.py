"""Adapter packages: deterministic archives, and a strict unpacker."""

import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cotune.aggregator.package import MAX_ENTRIES, PackageError, pack_adapter, unpack_adapter

SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
names = st.text(alphabet=SAFE, min_size=1, max_size=40).filter(lambda n: n not in (".", ".."))
adapters = st.dictionaries(names, st.binary(max_size=2048), max_size=12)


def _write(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"content") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _entry(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


ADAPTER = {"adapter_config.json": b'{"r": 8}', "adapter_model.safetensors": os.urandom(4096)}


@given(files=adapters)
def test_round_trip(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = _write(Path(tmp) / "source", files)
        archive = pack_adapter(source)
        destination = Path(tmp) / "out" / "adapter"
        assert unpack_adapter(archive, destination) == sorted(files)
        assert {p.name: p.read_bytes() for p in destination.iterdir()} == files
        # and the unpacked directory packs to the same archive
        assert pack_adapter(destination) == archive


@given(files=adapters)
def test_same_content_gives_the_same_archive(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        first = _write(Path(tmp) / "first", files)
        second = _write(Path(tmp) / "second", dict(reversed(list(files.items()))))
        for path in second.iterdir():
            os.utime(path, (1_000_000, 1_000_000))
            path.chmod(0o600)
        assert pack_adapter(first) == pack_adapter(first)
        assert pack_adapter(first) == pack_adapter(second)


def test_packing_twice_gives_identical_bytes(tmp_path: Path) -> None:
    source = _write(tmp_path / "adapter", ADAPTER)
    first = pack_adapter(source)
    os.utime(source / "adapter_config.json", (123, 456))
    assert pack_adapter(source) == first


def test_archive_entries_are_normalised(tmp_path: Path) -> None:
    source = _write(tmp_path / "adapter", ADAPTER)
    (source / "adapter_config.json").chmod(0o755)
    with tarfile.open(fileobj=io.BytesIO(pack_adapter(source)), mode="r:") as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == sorted(ADAPTER)
    for member in members:
        assert (member.mtime, member.mode, member.uid, member.gid) == (0, 0o644, 0, 0)
        assert (member.uname, member.gname) == ("", "")


def test_content_change_changes_the_archive(tmp_path: Path) -> None:
    source = _write(tmp_path / "adapter", ADAPTER)
    before = pack_adapter(source)
    (source / "adapter_config.json").write_bytes(b'{"r": 9}')
    assert pack_adapter(source) != before


def test_only_top_level_files_are_packed(tmp_path: Path) -> None:
    source = _write(tmp_path / "adapter", ADAPTER)
    _write(source / "checkpoint-1", {"optimizer.pt": b"state"})
    (source / "link").symlink_to(tmp_path / "elsewhere")
    assert pack_adapter(source) == pack_adapter(_write(tmp_path / "plain", ADAPTER))


def test_empty_directory_round_trips(tmp_path: Path) -> None:
    archive = pack_adapter(_write(tmp_path / "empty", {}))
    assert unpack_adapter(archive, tmp_path / "out") == []
    assert (tmp_path / "out").is_dir()
    assert list((tmp_path / "out").iterdir()) == []


def test_max_entries_accepted_one_more_refused(tmp_path: Path) -> None:
    files = {f"f{i:03d}": bytes([i]) for i in range(MAX_ENTRIES)}
    archive = pack_adapter(_write(tmp_path / "full", files))
    assert len(unpack_adapter(archive, tmp_path / "full-out")) == MAX_ENTRIES

    too_many = pack_adapter(_write(tmp_path / "over", files | {"extra": b"x"}))
    with pytest.raises(PackageError, match="too many"):
        unpack_adapter(too_many, tmp_path / "over-out")
    assert not (tmp_path / "over-out").exists()


# ---- refusals ----------------------------------------------------------------------------


def _assert_nothing_left(parent: Path, before: set[str]) -> None:
    assert {p.name for p in parent.iterdir()} == before


def test_existing_destination_is_refused(tmp_path: Path) -> None:
    archive = pack_adapter(_write(tmp_path / "adapter", ADAPTER))
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "keep").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        unpack_adapter(archive, destination)
    assert [p.name for p in destination.iterdir()] == ["keep"]
    assert (destination / "keep").read_bytes() == b"mine"
    _assert_nothing_left(tmp_path, {"adapter", "out"})


def test_existing_file_destination_is_refused(tmp_path: Path) -> None:
    archive = pack_adapter(_write(tmp_path / "adapter", ADAPTER))
    (tmp_path / "out").write_bytes(b"file")
    with pytest.raises(FileExistsError):
        unpack_adapter(archive, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"file"


BAD_ARCHIVES = {
    "subdirectory path": _tar(_file("adapter_config.json"), _file("sub/evil.py")),
    "absolute path": _tar(_file("/etc/evil")),
    "parent path": _tar(_file("../evil")),
    "directory entry": _tar(_file("a"), _entry("sub", tarfile.DIRTYPE)),
    "symlink entry": _tar(_file("a"), _entry("link", tarfile.SYMTYPE, "/etc/passwd")),
    "relative symlink": _tar(_entry("link", tarfile.SYMTYPE, "a")),
    "hard link entry": _tar(_file("a"), _entry("hard", tarfile.LNKTYPE, "a")),
    "fifo entry": _tar(_entry("fifo", tarfile.FIFOTYPE)),
    "device entry": _tar(_entry("dev", tarfile.CHRTYPE)),
    "dot entry": _tar(_file(".")),
}
NOT_TAR = {
    "empty": b"",
    "text": b"this is not a tar archive" * 40,
    "short": b"\x00\x01\x02",
    "random": bytes(range(256)) * 8,
    "gzip magic": b"\x1f\x8b\x08\x00" + b"\x00" * 600,
}


@pytest.mark.parametrize("blob", list(BAD_ARCHIVES.values()), ids=list(BAD_ARCHIVES))
def test_bad_entries_are_refused(tmp_path: Path, blob: bytes) -> None:
    parent = tmp_path / "work"
    parent.mkdir()
    with pytest.raises(PackageError):
        unpack_adapter(blob, parent / "adapter")
    _assert_nothing_left(parent, set())


@pytest.mark.parametrize("blob", list(NOT_TAR.values()), ids=list(NOT_TAR))
def test_non_tar_blob_is_refused(tmp_path: Path, blob: bytes) -> None:
    with pytest.raises(PackageError):
        unpack_adapter(blob, tmp_path / "missing-parent" / "adapter")
    _assert_nothing_left(tmp_path, set())


def test_truncated_archive_is_refused(tmp_path: Path) -> None:
    archive = pack_adapter(_write(tmp_path / "adapter", ADAPTER))
    # cut inside the safetensors payload (second member, after its header block)
    cut = archive.index(ADAPTER["adapter_model.safetensors"][:64]) + 100
    with pytest.raises(PackageError):
        unpack_adapter(archive[:cut], tmp_path / "out")
    _assert_nothing_left(tmp_path, {"adapter"})


def test_write_failure_leaves_no_staging_directory(tmp_path: Path) -> None:
    """An entry the filesystem cannot write (name too long) aborts with nothing left."""
    archive = _tar(_file("ok"), _file("n" * 300))
    parent = tmp_path / "work"
    parent.mkdir()
    with pytest.raises((PackageError, OSError)):
        unpack_adapter(archive, parent / "adapter")
    _assert_nothing_left(parent, set())


@given(blob=st.binary(max_size=4096))
def test_arbitrary_bytes_never_escape(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        destination = Path(tmp) / "adapter"
        try:
            names = unpack_adapter(blob, destination)
        except PackageError:
            assert list(Path(tmp).iterdir()) == []
        else:
            assert sorted(p.name for p in destination.iterdir()) == names
            assert all(p.is_file() and not p.is_symlink() for p in destination.iterdir())


@given(
    position=st.integers(min_value=0),
    value=st.integers(1, 255),
    cut=st.none() | st.integers(min_value=0),
)
def test_damaged_archives_unpack_cleanly_or_are_refused(
    position: int, value: int, cut: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = bytearray(pack_adapter(_write(Path(tmp) / "src", ADAPTER)))
        archive[position % len(archive)] ^= value
        if cut is not None:
            archive = archive[: cut % len(archive)]
        destination = Path(tmp) / "out" / "adapter"
        try:
            names = unpack_adapter(bytes(archive), destination)
        except PackageError:
            assert not (Path(tmp) / "out").exists()
        else:
            assert sorted(p.name for p in destination.iterdir()) == names
            assert all("/" not in n for n in names)
            assert len(names) <= MAX_ENTRIES
