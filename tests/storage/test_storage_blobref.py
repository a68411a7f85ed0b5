"""Content ids and ``BlobRef``: only canonical SHA-256 hex ids are accepted."""

import dataclasses
import hashlib

import pytest

from cotune.storage import BlobRef
from cotune.storage.blob import validate_cid

DATA = b"cotune blob"
CID = hashlib.sha256(DATA).hexdigest()

# Ids that are not a canonical 64-digit lower-case hex SHA-256 in any form.
MALFORMED = {
    "empty": "",
    "short": CID[:-1],
    "long": CID + "0",
    "non-hex": "g" + CID[1:],
    "leading-space": " " + CID,
    "trailing-space": CID + " ",
    "trailing-newline": CID + "\n",
    "embedded-newline": CID[:32] + "\n" + CID[32:],
    "path-traversal": "../" + CID[3:],
    "prefix-only": "sha256:",
    "double-prefix": "sha256:sha256:" + CID,
    "other-algorithm": "md5:" + CID,
    "0x-prefix": "0x" + CID[2:],
}


def test_blobref_str_and_digest() -> None:
    ref = BlobRef(CID, len(DATA))
    assert str(ref) == "sha256:" + CID
    assert ref.digest == hashlib.sha256(DATA).digest()
    assert len(ref.digest) == 32
    assert ref.size == len(DATA)


def test_blobref_is_frozen_hashable_and_ordered() -> None:
    low, high = BlobRef("0" * 64, 1), BlobRef("f" * 64, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        low.size = 5  # type: ignore[misc]
    assert {low, BlobRef("0" * 64, 1)} == {low}
    assert low != BlobRef("0" * 64, 2)
    assert sorted([high, low]) == [low, high]


@pytest.mark.parametrize("cid", list(MALFORMED.values()), ids=list(MALFORMED))
def test_blobref_rejects_malformed_cid(cid: str) -> None:
    with pytest.raises(ValueError, match="content id"):
        BlobRef(cid, 1)


@pytest.mark.parametrize("cid", ["sha256:" + CID, CID.upper()], ids=["prefixed", "upper-case"])
def test_blobref_requires_the_canonical_form(cid: str) -> None:
    # BlobRef stores exactly what it is given, so it must not accept other spellings.
    with pytest.raises(ValueError):
        BlobRef(cid, 1)


def test_blobref_rejects_negative_size() -> None:
    with pytest.raises(ValueError, match="negative"):
        BlobRef(CID, -1)


def test_blobref_accepts_zero_size() -> None:
    empty = hashlib.sha256(b"").hexdigest()
    assert BlobRef(empty, 0).size == 0


@pytest.mark.parametrize(
    "cid",
    [CID, "sha256:" + CID, CID.upper(), "sha256:" + CID.upper()],
    ids=["bare", "prefixed", "upper-case", "prefixed-upper-case"],
)
def test_validate_cid_normalises(cid: str) -> None:
    assert validate_cid(cid) == CID


@pytest.mark.parametrize("cid", list(MALFORMED.values()), ids=list(MALFORMED))
def test_validate_cid_rejects_malformed(cid: str) -> None:
    with pytest.raises(ValueError, match="content id"):
        validate_cid(cid)
