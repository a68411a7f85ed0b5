"""Property: any byte string put into a ``LocalStore`` comes back unchanged under its SHA-256."""

from __future__ import annotations

import hashlib
import random
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cotune.storage import LocalStore
from cotune.storage.blob import READ_BLOCK

# Sizes at and around the boundaries of the stores' 1 MiB read block.
BOUNDARY_SIZES = [
    0,
    1,
    READ_BLOCK - 1,
    READ_BLOCK,
    READ_BLOCK + 1,
    2 * READ_BLOCK - 1,
    2 * READ_BLOCK,
    2 * READ_BLOCK + 1,
]


def _random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


blobs = st.one_of(
    st.binary(max_size=4096),
    st.builds(_random_bytes, st.sampled_from(BOUNDARY_SIZES), st.integers(0, 2**32)),
)


@settings(max_examples=30, deadline=None)
@given(data=blobs)
@example(data=b"")
@example(data=_random_bytes(READ_BLOCK - 1, 1))
@example(data=_random_bytes(READ_BLOCK, 2))
@example(data=_random_bytes(READ_BLOCK + 1, 3))
def test_put_then_get_round_trips(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(Path(root))
        ref = store.put(data)
        assert ref.cid == hashlib.sha256(data).hexdigest()
        assert ref.size == len(data)
        assert store.get_bytes(ref) == data
        assert store.stat(ref.cid) == ref
        assert list((store.root / "tmp").iterdir()) == []
