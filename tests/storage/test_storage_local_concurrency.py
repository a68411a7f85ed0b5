"""Concurrent ``LocalStore`` writers of the same blob, as threads and as separate processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from cotune.storage import BlobRef, LocalStore

WRITERS = 8
SIZE = 5 << 20

# Each child announces it is ready, waits for the go signal, then puts the same file.
_CHILD = """
import sys, time
from pathlib import Path
from cotune.storage import LocalStore

root, source, ready, go = (Path(arg) for arg in sys.argv[1:5])
store = LocalStore(root)
ready.touch()
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("no go signal")
    time.sleep(0.002)
ref = store.put_file(source)
print(ref.cid, ref.size)
"""


def _check_final_state(store: LocalStore, ref: BlobRef, data: bytes) -> None:
    assert ref == BlobRef(hashlib.sha256(data).hexdigest(), len(data))
    store.verify(ref)
    assert store.get_bytes(ref) == data
    assert store.stat(ref.cid) == ref
    objects = [p for p in (store.root / "objects").rglob("*") if p.is_file()]
    assert objects == [store.path_of(ref.cid)]
    assert list((store.root / "tmp").iterdir()) == []


def test_threads_writing_the_same_blob(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    root = tmp_path / "store"
    barrier = threading.Barrier(WRITERS)
    results: list[BlobRef] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            store = LocalStore(root)  # each thread with its own instance on the same root
            barrier.wait(timeout=30)
            results.append(store.put(data))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(results) == WRITERS
    assert len(set(results)) == 1
    _check_final_state(LocalStore(root), results[0], data)


def test_processes_writing_the_same_blob(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    root = tmp_path / "store"
    go = tmp_path / "go"
    readies = [tmp_path / f"ready-{n}" for n in range(WRITERS)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(root), str(source), str(ready), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in readies
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(ready.exists() for ready in readies):
            assert all(child.poll() is None for child in children), "a writer died early"
            assert time.monotonic() < deadline, "writers never became ready"
            time.sleep(0.01)
        go.touch()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    reported = {out.split()[0] for out, _ in outputs}
    sizes = {int(out.split()[1]) for out, _ in outputs}
    assert reported == {hashlib.sha256(data).hexdigest()}
    assert sizes == {SIZE}
    _check_final_state(LocalStore(root), BlobRef(reported.pop(), SIZE), data)
