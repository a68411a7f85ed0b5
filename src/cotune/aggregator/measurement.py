"""The code measurement: a deterministic hash of the installed cotune code and contracts.

A contributor pins the measurement they encrypt to; a dev enclave reports it in its
statement and a real TEE's quote would carry it in its report data. Every ``*.py`` file
of the installed ``cotune`` package and every compiled contract artifact is hashed, by
relative path and content, in sorted order, so the value depends only on the code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cotune

MEASURED_SUFFIXES = (".py", ".json")
"""Files that make up the measured code: Python sources and contract artifacts."""


def measured_files(root: Path | None = None) -> list[Path]:
    """The files the measurement covers, sorted by relative path."""
    package = root or Path(cotune.__file__).resolve().parent
    files = [
        p
        for p in package.rglob("*")
        if p.is_file()
        and p.suffix in MEASURED_SUFFIXES
        and "__pycache__" not in p.parts
        and (p.suffix == ".py" or p.parent.name == "artifacts")
    ]
    return sorted(files, key=lambda p: p.relative_to(package).as_posix())


def code_measurement(root: Path | None = None) -> bytes:
    """SHA-256 over (relative path, content hash) of every measured file."""
    package = root or Path(cotune.__file__).resolve().parent
    digest = hashlib.sha256(b"cotune measurement v1\n")
    for path in measured_files(package):
        relative = path.relative_to(package).as_posix()
        digest.update(f"{relative}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.digest()
