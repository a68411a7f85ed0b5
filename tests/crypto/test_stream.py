"""Streaming encryption: round trips at every size and a specific error for each tampering."""

import io
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cotune.crypto import (
    ChunkAuthenticationError,
    ChunkOrderError,
    ContextMismatchError,
    CryptoError,
    HpkePrivateKey,
    HpkeSuite,
    MalformedCiphertextError,
    TrailingDataError,
    TruncatedStreamError,
    WrongKeyError,
    decrypt_bytes,
    decrypt_file,
    encrypt_bytes,
    encrypt_file,
    encrypt_stream,
)
from cotune.crypto.stream import (
    DIAGNOSIS_DISTANCE,
    TAG_SIZE,
    StreamHeader,
    decrypt_stream_unverified,
)

CHUNK = 64
INFO = b"chain=31337|coordinator=0xc0|session=1|contributor=0xA"
KEYS = {suite: HpkePrivateKey.generate(suite) for suite in HpkeSuite}
KEY = KEYS[HpkeSuite.X25519]

boundary_sizes = st.sampled_from(
    [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1, 5 * CHUNK]
)


@pytest.mark.parametrize("suite", list(HpkeSuite), ids=lambda s: s.value)
@given(
    data=st.one_of(
        boundary_sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
        st.binary(max_size=20 * CHUNK),
    )
)
def test_round_trip_any_size(suite: HpkeSuite, data: bytes) -> None:
    key = KEYS[suite]
    ciphertext = encrypt_bytes(data, key.public_key(), INFO, chunk_size=CHUNK)
    assert decrypt_bytes(ciphertext, key, INFO) == data


@given(size=st.integers(min_value=0, max_value=10 * CHUNK), chunk=st.integers(1, 3 * CHUNK))
def test_ciphertext_length_is_exact(size: int, chunk: int) -> None:
    ciphertext = encrypt_bytes(os.urandom(size), KEY.public_key(), INFO, chunk_size=chunk)
    header = StreamHeader.read(io.BytesIO(ciphertext))
    assert len(ciphertext) == len(header.raw) + size + TAG_SIZE * header.chunks


def _layout(ciphertext: bytes) -> tuple[int, list[tuple[int, int]]]:
    """The header length and the (start, end) of every chunk."""
    header = StreamHeader.read(io.BytesIO(ciphertext))
    spans = []
    offset = len(header.raw)
    for index in range(header.chunks):
        end = offset + header.chunk_plaintext_size(index) + TAG_SIZE
        spans.append((offset, end))
        offset = end
    return len(header.raw), spans


def _sample(chunks: int = 4, last: int = 10) -> bytes:
    return encrypt_bytes(
        os.urandom(CHUNK * (chunks - 1) + last), KEY.public_key(), INFO, chunk_size=CHUNK
    )


def test_truncated_at_chunk_boundary() -> None:
    ciphertext = _sample()
    _, spans = _layout(ciphertext)
    with pytest.raises(TruncatedStreamError, match="chunk 3 of 4"):
        decrypt_bytes(ciphertext[: spans[2][1]], KEY, INFO)


def test_truncated_mid_chunk() -> None:
    ciphertext = _sample()
    _, spans = _layout(ciphertext)
    with pytest.raises(TruncatedStreamError, match="chunk 1 of 4"):
        decrypt_bytes(ciphertext[: spans[1][0] + 5], KEY, INFO)


def test_truncated_final_tag() -> None:
    ciphertext = _sample()
    with pytest.raises(TruncatedStreamError):
        decrypt_bytes(ciphertext[:-1], KEY, INFO)


def test_truncated_inside_header_and_sealed_key() -> None:
    ciphertext = _sample()
    header_len, _ = _layout(ciphertext)
    with pytest.raises(TruncatedStreamError, match="header"):
        decrypt_bytes(ciphertext[:10], KEY, INFO)
    with pytest.raises(TruncatedStreamError, match="sealed file key"):
        decrypt_bytes(ciphertext[: header_len - 3], KEY, INFO)


def test_extra_chunk_appended() -> None:
    ciphertext = _sample()
    _, spans = _layout(ciphertext)
    start, end = spans[1]
    with pytest.raises(TrailingDataError):
        decrypt_bytes(ciphertext + ciphertext[start:end], KEY, INFO)


def test_trailing_byte() -> None:
    with pytest.raises(TrailingDataError):
        decrypt_bytes(_sample() + b"\x00", KEY, INFO)


def test_reordered_chunks() -> None:
    ciphertext = _sample()
    _, spans = _layout(ciphertext)
    (a0, a1), (b0, b1) = spans[0], spans[1]
    swapped = ciphertext[:a0] + ciphertext[b0:b1] + ciphertext[a0:a1] + ciphertext[b1:]
    with pytest.raises(ChunkOrderError, match="position 0 is chunk 1"):
        decrypt_bytes(swapped, KEY, INFO)


def test_duplicated_chunk_in_place_of_another() -> None:
    ciphertext = _sample()
    _, spans = _layout(ciphertext)
    (a0, a1), (b0, b1) = spans[0], spans[2]
    duplicated = ciphertext[:b0] + ciphertext[a0:a1] + ciphertext[b1:]
    with pytest.raises(ChunkOrderError, match="position 2 is chunk 0"):
        decrypt_bytes(duplicated, KEY, INFO)


def test_full_size_final_chunk_moved_is_reordering() -> None:
    ciphertext = _sample(chunks=3, last=CHUNK)
    _, spans = _layout(ciphertext)
    (a0, a1), (b0, b1) = spans[1], spans[2]
    swapped = ciphertext[:a0] + ciphertext[b0:b1] + ciphertext[a0:a1]
    with pytest.raises(ChunkOrderError):
        decrypt_bytes(swapped, KEY, INFO)


def test_spliced_chunk_from_another_stream() -> None:
    first, second = _sample(), _sample()
    _, spans = _layout(first)
    start, end = spans[1]
    spliced = first[:start] + second[start:end] + first[end:]
    with pytest.raises(ChunkAuthenticationError, match="chunk 1 of 4"):
        decrypt_bytes(spliced, KEY, INFO)


@pytest.mark.parametrize("which", [0, 1, 3])
def test_flipped_bit_in_chunk(which: int) -> None:
    ciphertext = bytearray(_sample())
    _, spans = _layout(bytes(ciphertext))
    start, end = spans[which]
    ciphertext[(start + end) // 2] ^= 0x04
    with pytest.raises(ChunkAuthenticationError, match=f"chunk {which} of 4"):
        decrypt_bytes(bytes(ciphertext), KEY, INFO)


@given(position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(position: int, bit: int) -> None:
    ciphertext = bytearray(_sample(chunks=3))
    ciphertext[position % len(ciphertext)] ^= 1 << bit
    with pytest.raises(CryptoError):
        decrypt_bytes(bytes(ciphertext), KEY, INFO)


def test_wrong_key() -> None:
    with pytest.raises(WrongKeyError):
        decrypt_bytes(_sample(), HpkePrivateKey.generate(), INFO)


def test_wrong_suite_key() -> None:
    with pytest.raises(WrongKeyError, match="x25519"):
        decrypt_bytes(_sample(), KEYS[HpkeSuite.MLKEM768_X25519], INFO)


@pytest.mark.parametrize(
    "other",
    [
        INFO.replace(b"session=1", b"session=2"),
        INFO.replace(b"contributor=0xA", b"contributor=0xB"),
        INFO.replace(b"chain=31337", b"chain=1"),
        b"",
    ],
)
def test_wrong_info(other: bytes) -> None:
    with pytest.raises(ContextMismatchError):
        decrypt_bytes(_sample(), KEY, other)


def test_not_a_ciphertext() -> None:
    with pytest.raises(MalformedCiphertextError, match="magic"):
        decrypt_bytes(b"PK\x03\x04" + bytes(100), KEY, INFO)
    ciphertext = bytearray(_sample())
    ciphertext[4] = 9
    with pytest.raises(MalformedCiphertextError, match="version 9"):
        decrypt_bytes(bytes(ciphertext), KEY, INFO)


def test_header_length_field_is_authenticated() -> None:
    ciphertext = bytearray(_sample())
    # plaintext length: the 8 bytes after magic(4) version(1) ids(2+2+2+1) chunk size(4)
    ciphertext[23] ^= 0x01
    with pytest.raises(CryptoError):
        decrypt_bytes(bytes(ciphertext), KEY, INFO)


def _tamper_last_chunk(ciphertext: bytes) -> bytes:
    tampered = bytearray(ciphertext)
    tampered[-3] ^= 0x80
    return bytes(tampered)


def test_decrypt_file_never_leaves_unauthenticated_plaintext(tmp_path: Path) -> None:
    source = tmp_path / "plain.bin"
    source.write_bytes(os.urandom(10 * 1024 + 7))
    encrypted = tmp_path / "cipher.ctun"
    encrypt_file(source, encrypted, KEY.public_key(), INFO, chunk_size=1024)
    encrypted.write_bytes(_tamper_last_chunk(encrypted.read_bytes()))
    out = tmp_path / "out" / "plain.bin"
    out.parent.mkdir()
    with pytest.raises(ChunkAuthenticationError):
        decrypt_file(encrypted, out, KEY, INFO)
    assert list(out.parent.iterdir()) == []


def test_failed_decrypt_keeps_existing_destination(tmp_path: Path) -> None:
    encrypted = tmp_path / "cipher.ctun"
    encrypted.write_bytes(_tamper_last_chunk(_sample()))
    out = tmp_path / "plain.bin"
    out.write_bytes(b"previous good version")
    with pytest.raises(ChunkAuthenticationError):
        decrypt_file(encrypted, out, KEY, INFO)
    assert out.read_bytes() == b"previous good version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cipher.ctun", "plain.bin"]


def test_file_round_trip_and_progress(tmp_path: Path) -> None:
    source = tmp_path / "plain.bin"
    data = os.urandom(3 * 4096 + 5)
    source.write_bytes(data)
    seen: list[int] = []
    encrypt_file(
        source, tmp_path / "c", KEY.public_key(), INFO, chunk_size=4096, progress=seen.append
    )
    assert sum(seen) == len(data)
    seen.clear()
    assert decrypt_file(tmp_path / "c", tmp_path / "p", KEY, INFO, progress=seen.append) == len(
        data
    )
    assert sum(seen) == len(data)
    assert (tmp_path / "p").read_bytes() == data
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o600


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._inner.readinto(buffer)


def test_unseekable_source_needs_length() -> None:
    with pytest.raises(ValueError, match="plaintext_length"):
        encrypt_stream(_Unseekable(b"abc"), io.BytesIO(), KEY.public_key(), INFO)  # type: ignore[arg-type]
    sink = io.BytesIO()
    encrypt_stream(_Unseekable(b"abc"), sink, KEY.public_key(), INFO, plaintext_length=3)  # type: ignore[arg-type]
    assert decrypt_bytes(sink.getvalue(), KEY, INFO) == b"abc"


def test_declared_length_must_match_source() -> None:
    with pytest.raises(ValueError, match="ended before"):
        encrypt_stream(io.BytesIO(b"abc"), io.BytesIO(), KEY.public_key(), INFO, plaintext_length=4)
    with pytest.raises(ValueError, match="longer"):
        encrypt_stream(
            io.BytesIO(b"abcd"), io.BytesIO(), KEY.public_key(), INFO, plaintext_length=3
        )


def test_bad_chunk_size_rejected() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        encrypt_bytes(b"x", KEY.public_key(), INFO, chunk_size=0)


class _CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:  # type: ignore[override]
        n = memoryview(data).nbytes  # type: ignore[arg-type]
        self.count += n
        return n


class _ZeroSource(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        self.left -= n
        return n


def _peak_allocation(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_for_large_streams() -> None:
    chunk = 1 << 16
    small, large = 1 << 20, 32 << 20
    peaks = []
    for size in (small, large):
        sink = _CountingSink()
        peaks.append(
            _peak_allocation(
                lambda size=size, sink=sink: encrypt_stream(
                    _ZeroSource(size),
                    sink,
                    KEY.public_key(),
                    INFO,
                    chunk_size=chunk,
                    plaintext_length=size,  # type: ignore[arg-type]
                )
            )
        )
        assert sink.count > size
    assert peaks[1] < 8 * chunk
    assert peaks[1] < peaks[0] + chunk


def test_decrypt_memory_stays_flat(tmp_path: Path) -> None:
    chunk = 1 << 16
    size = 16 << 20
    encrypted = tmp_path / "big.ctun"
    with encrypted.open("wb") as sink:
        encrypt_stream(
            _ZeroSource(size), sink, KEY.public_key(), INFO, chunk_size=chunk, plaintext_length=size
        )  # type: ignore[arg-type]

    def consume() -> None:
        with encrypted.open("rb") as source:
            for _ in decrypt_stream_unverified(source, KEY, INFO):
                pass

    assert _peak_allocation(consume) < 8 * chunk


def _claiming(chunks: int, chunk_size: int = 1) -> bytes:
    """A real header that claims ``chunks`` chunks, followed by one chunk of garbage."""
    header = StreamHeader.build(
        KEY.public_key(), os.urandom(32), INFO, chunk_size, chunks * chunk_size
    )
    return header.raw + os.urandom(chunk_size + TAG_SIZE)


def test_tiny_blob_claiming_many_chunks_is_refused_before_any_chunk() -> None:
    # 142 bytes that claim 2**16 chunks: refused from the sizes alone, no chunk is tried
    # (before, chunk 0 failed and was tried at every one of the 65,536 positions).
    blob = _claiming(1 << 16)
    assert len(blob) < 200
    with pytest.raises(TruncatedStreamError, match=r"chunk 1 of 65536: 0 of 17 bytes"):
        decrypt_bytes(blob, KEY, INFO)


def test_size_check_names_the_chunk_a_file_ends_in(tmp_path: Path) -> None:
    ciphertext = _sample()
    _, spans = _layout(ciphertext)
    path = tmp_path / "cut.ctun"
    path.write_bytes(ciphertext[: spans[2][0] + 3])
    with pytest.raises(TruncatedStreamError, match="chunk 2 of 4: 3 of 80 bytes"):
        decrypt_file(path, tmp_path / "out", KEY, INFO)
    assert not (tmp_path / "out").exists()


def test_reordering_is_looked_for_nearby_only() -> None:
    chunks = 3 * DIAGNOSIS_DISTANCE
    ciphertext = _sample(chunks=chunks, last=CHUNK)
    _, spans = _layout(ciphertext)
    far = DIAGNOSIS_DISTANCE + 1
    (a0, a1), (b0, b1) = spans[0], spans[far]
    moved = ciphertext[:a0] + ciphertext[b0:b1] + ciphertext[a1:]
    with pytest.raises(ChunkAuthenticationError, match=f"chunk 0 of {chunks}"):
        decrypt_bytes(moved, KEY, INFO)
    (b0, b1) = spans[DIAGNOSIS_DISTANCE]
    near = ciphertext[:a0] + ciphertext[b0:b1] + ciphertext[a1:]
    with pytest.raises(ChunkOrderError, match=f"position 0 is chunk {DIAGNOSIS_DISTANCE}"):
        decrypt_bytes(near, KEY, INFO)
