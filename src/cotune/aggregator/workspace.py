"""Where the enclave's plaintext may touch a file system: private, memory-backed, swept.

Adapter files exist as plaintext between training and encryption. They go to a mode-0700
directory per run, inside one root per aggregator data directory (on ``/dev/shm`` when
there is one, so a power cut leaves nothing on disk). A SIGKILL skips every ``finally``,
so the service sweeps its own root when it starts: nothing from a killed run survives the
restart. Other aggregators' roots (another data directory) are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT_PREFIX = "cotune-enclave-"


def plaintext_base() -> Path:
    """Where plaintext roots go: memory-backed ``/dev/shm`` when usable, else the temp dir."""
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs, not a shared temp path
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def plaintext_root(data_dir: Path) -> Path:
    """This aggregator's own plaintext root (one per data directory), created mode 0700."""
    tag = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    root = plaintext_base() / f"{ROOT_PREFIX}{tag}"
    root.mkdir(mode=0o700, exist_ok=True)
    if root.stat().st_uid != os.getuid() or root.is_symlink():
        raise PermissionError(f"{root} is not this user's own directory")
    root.chmod(0o700)
    return root


def sweep(root: Path) -> int:
    """Remove whatever a killed run left in ``root``; returns how many entries went."""
    removed = 0
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def plaintext_workspace(root: Path) -> Iterator[Path]:
    """A private (mode 0700) directory inside ``root``, removed on every exit path."""
    with tempfile.TemporaryDirectory(prefix="run-", dir=root) as tmp:
        yield Path(tmp)
