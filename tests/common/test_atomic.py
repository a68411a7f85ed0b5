"""Atomic writes: the final path appears only complete, and failures leave nothing behind."""

from pathlib import Path

import pytest

from cotune.common.atomic import atomic_writer, write_bytes_atomic


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_write_creates_file_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    write_bytes_atomic(target, b"hello", mode=0o600)
    assert target.read_bytes() == b"hello"
    assert target.stat().st_mode & 0o777 == 0o600
    assert _siblings(target) == ["out.bin"]


def test_exception_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("boom")
    assert _siblings(target) == []


def test_exception_keeps_previous_content(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert _siblings(target) == ["out.bin"]


def test_no_overwrite_refuses_existing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        write_bytes_atomic(target, b"new", overwrite=False)
    assert target.read_bytes() == b"old"
    assert _siblings(target) == ["out.bin"]


def test_size_hint_larger_than_content_is_trimmed(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_writer(target, size_hint=1 << 20) as handle:
        handle.write(b"abc")
    assert target.read_bytes() == b"abc"
