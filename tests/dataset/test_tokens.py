"""The member-token journal: scopes, one live token per receipt, append-only storage.

Also: the torn last line of a crashed writer, the size and line caps, the migration of
the old one-document format, writers in parallel, and a property test of the reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cotune.dataset.tokens import (
    LEGACY_TOKENS_FORMAT,
    MAX_LINE_BYTES,
    TOKENS_FORMAT,
    DuplicateLabelError,
    NoSuchTokenError,
    ReceiptRevokedError,
    RevokedBy,
    RevokedTokenError,
    ScopeError,
    ScopeKind,
    TokenScope,
    TokenStore,
    TokenStoreFormatError,
    TokenStoreFullError,
    UnknownTokenError,
    hash_token,
)

BUYER = Account.create().address
OTHER = Account.create().address


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_exact_scope_opens_one_version_and_up_to_every_earlier_one(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    owner = store.issue("owner", TokenScope.up_to(3))
    bought, _ = store.issue_for_receipt("purchase-1", 3, BUYER, 1)
    for version in (1, 2, 3):
        assert store.check(owner, version).scope == TokenScope(ScopeKind.UP_TO, 3)
    assert store.check(bought, 3).buyer == BUYER
    for version in (1, 2, 4):
        with pytest.raises(ScopeError, match=f"covers v3 only, not v{version}") as caught:
            store.check(bought, version)
        assert caught.value.record.scope == TokenScope.exact(3)
    with pytest.raises(ScopeError, match=r"covers versions 1\.\.3, not v4"):
        store.check(owner, 4)
    with pytest.raises(ValueError, match="scope's version"):
        TokenScope.exact(0)


def test_the_journal_is_only_appended_to_and_private(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path)
    token = store.issue("alice", TokenScope.up_to(1))
    first = path.read_bytes()
    store.issue("bob", TokenScope.up_to(2))
    second = path.read_bytes()
    store.revoke("alice")
    third = path.read_bytes()
    assert second.startswith(first) and third.startswith(second)  # never rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = _lines(path)
    assert lines[0] == {"format": TOKENS_FORMAT}
    assert [line["op"] for line in lines[1:]] == ["issue", "issue", "revoke"]
    assert lines[3] == {
        "op": "revoke",
        "token_sha256": hash_token(token),
        "reason": "publisher",
        "at": lines[3]["at"],
    }
    assert token not in path.read_text()
    assert hash_token(token) in path.read_text()


def test_errors_are_distinct(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.issue("alice", TokenScope.up_to(1))
    with pytest.raises(UnknownTokenError):
        store.check("nope", 1)
    with pytest.raises(UnknownTokenError):
        store.check(None, 1)
    with pytest.raises(DuplicateLabelError):
        store.issue("alice", TokenScope.up_to(3))
    with pytest.raises(NoSuchTokenError, match="label or hash 'bob'"):
        store.revoke("bob")
    with pytest.raises(NoSuchTokenError, match="bought by"):
        store.revoke_buyer(BUYER)
    with pytest.raises(NoSuchTokenError, match="receipt 9"):
        store.revoke_receipt(9)
    (record,) = store.revoke(hash_token(token).upper())
    assert record.revoked and record.revocation is not None
    assert record.revocation.reason is RevokedBy.PUBLISHER
    with pytest.raises(RevokedTokenError, match="revoked by the publisher"):
        store.check(token, 1)
    assert store.revoke("alice") == [record]  # again: nothing changes
    with pytest.raises(ValueError, match="at most"):
        store.issue("x" * 201, TokenScope.up_to(1))


def test_a_new_claim_replaces_the_receipts_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path)
    first, replaced = store.issue_for_receipt("claim-1", 2, BUYER, 7)
    assert replaced == []
    other, _ = store.issue_for_receipt("claim-other", 2, OTHER, 8)
    second, replaced = store.issue_for_receipt("claim-2", 2, BUYER, 7)
    assert [r.label for r in replaced] == ["claim-1"]
    assert replaced[0].revocation is not None
    assert replaced[0].revocation.reason is RevokedBy.REPLACED
    with pytest.raises(RevokedTokenError, match="replaced by a newer token"):
        store.check(first, 2)
    assert store.check(second, 2).receipt_id == 7
    assert store.check(other, 2).receipt_id == 8  # another receipt is untouched
    live = [r.label for r in store.list() if not r.revoked]
    assert live == ["claim-other", "claim-2"]
    with pytest.raises(DuplicateLabelError):  # a replayed claim
        store.issue_for_receipt("claim-2", 2, BUYER, 7)
    # One append each time: the replacement and its revocation land together.
    assert [line["op"] for line in _lines(path)[1:]] == ["issue", "issue", "revoke", "issue"]


def test_the_publishers_revocation_closes_the_receipt(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token, _ = store.issue_for_receipt("claim-1", 1, BUYER, 3)
    (revoked,) = store.revoke_receipt(3)
    assert revoked.label == "claim-1"
    with pytest.raises(ReceiptRevokedError, match="receipt 3"):
        store.issue_for_receipt("claim-2", 1, BUYER, 3)
    with pytest.raises(RevokedTokenError, match="publisher"):
        store.check(token, 1)
    # It sticks across a restart, and another receipt of the same buyer is unaffected.
    restarted = TokenStore(store.path)
    with pytest.raises(ReceiptRevokedError):
        restarted.issue_for_receipt("claim-3", 1, BUYER, 3)
    restarted.issue_for_receipt("claim-4", 2, BUYER, 4)


def test_revoking_by_buyer_or_a_replaced_token_closes_the_receipts(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.issue_for_receipt("a-1", 1, BUYER, 1)
    store.issue_for_receipt("a-2", 1, BUYER, 1)  # replaces a-1
    store.issue_for_receipt("b-1", 2, BUYER, 2)
    store.issue_for_receipt("o-1", 2, OTHER, 3)
    revoked = store.revoke_buyer(BUYER.lower())
    assert {r.label for r in revoked} == {"a-1", "a-2", "b-1"}
    assert all(r.revocation and r.revocation.reason is RevokedBy.PUBLISHER for r in revoked)
    for label, receipt, version in (("a-3", 1, 1), ("b-2", 2, 2)):
        with pytest.raises(ReceiptRevokedError):
            store.issue_for_receipt(label, version, BUYER, receipt)
    store.issue_for_receipt("o-2", 2, OTHER, 3)  # OTHER is still served

    # Revoking a token that a newer claim already replaced still closes its receipt.
    store.issue_for_receipt("c-1", 1, OTHER, 5)
    store.issue_for_receipt("c-2", 1, OTHER, 5)
    store.revoke_receipt(5)
    (old,) = store.revoke("c-1")
    assert old.revocation is not None and old.revocation.reason is RevokedBy.PUBLISHER
    with pytest.raises(ReceiptRevokedError):
        store.issue_for_receipt("c-3", 1, OTHER, 5)


def test_a_revocation_by_another_store_object_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    served = TokenStore(path)
    token = served.issue("member", TokenScope.up_to(2))
    assert served.check(token, 2).label == "member"
    TokenStore(path).revoke("member")  # e.g. the CLI, in another process
    with pytest.raises(RevokedTokenError):
        served.check(token, 2)


def test_a_torn_last_line_is_ignored_then_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path)
    kept = store.issue("kept", TokenScope.up_to(1))
    whole = path.read_bytes()
    torn = b'{"op":"issue","token_sha256":"ab'  # a writer died mid-append
    with path.open("ab") as handle:
        handle.write(torn)
    reader = TokenStore(path)  # a restart: not fatal
    assert [r.label for r in reader.list()] == ["kept"]
    assert reader.check(kept, 1).label == "kept"
    later = reader.issue("later", TokenScope.up_to(1))
    data = path.read_bytes()
    assert data.startswith(whole) and torn not in data
    assert [r.label for r in TokenStore(path).list()] == ["kept", "later"]
    assert store.check(later, 1).label == "later"  # the first object follows the repair


def test_a_repair_that_keeps_the_size_is_still_seen(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    reader = TokenStore(path)
    reader.issue("a", TokenScope.up_to(1))
    scratch = TokenStore(tmp_path / "scratch.json")
    scratch.issue("b", TokenScope.up_to(1))
    line = len((tmp_path / "scratch.json").read_bytes().splitlines(keepends=True)[1])
    with path.open("ab") as handle:
        handle.write(b"x" * line)  # a torn line exactly as long as the next one
    assert [r.label for r in reader.list()] == ["a"]
    size = path.stat().st_size
    token = TokenStore(path).issue("b", TokenScope.up_to(1))  # cuts the tail, appends
    assert path.stat().st_size == size  # same inode, same size: only the bytes changed
    assert reader.check(token, 1).label == "b"


def test_a_torn_first_line_is_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(b'{"format":"cotune-da')
    store = TokenStore(path)
    assert store.list() == []
    store.issue("first", TokenScope.up_to(1))
    assert _lines(path)[0] == {"format": TOKENS_FORMAT}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format":"cotune-dataset-tokens/9"}\n', "line 1: format must be"),
        (b"[]\n", "line 1: the first line must have"),
        (b'{"format":"cotune-dataset-tokens/2"}\nnot json\n', "line 2"),
        (b'{"format":"cotune-dataset-tokens/2"}\n{"op":"delete"}\n', "line 2: expected an object"),
        (
            b'{"format":"cotune-dataset-tokens/2"}\n'
            b'{"op":"revoke","token_sha256":"' + b"0" * 64 + b'","reason":"publisher","at":1}\n',
            "never issued",
        ),
        (
            b'{"format":"cotune-dataset-tokens/2"}\n' + b" " * MAX_LINE_BYTES + b"{}\n",
            f"longer than {MAX_LINE_BYTES} bytes",
        ),
        (
            b'{"format":"cotune-dataset-tokens/2"}\n' + b"[" * 2000 + b"\n",
            "line 2",
        ),
    ],
)
def test_a_broken_journal_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    with pytest.raises(TokenStoreFormatError, match=message):
        TokenStore(path)


def test_the_size_cap_leaves_room_for_every_revocation(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path, max_bytes=2048)
    labels = []
    with pytest.raises(TokenStoreFullError, match="cap of 2048"):
        while True:
            labels.append(f"member-{len(labels)}")
            store.issue(labels[-1], TokenScope.up_to(1))
    issued = labels[:-1]
    assert len(issued) >= 2
    for label in issued:  # every live token can still be revoked
        store.revoke(label)
    assert path.stat().st_size <= 2048
    assert all(r.revoked for r in TokenStore(path, max_bytes=2048).list())
    with pytest.raises(TokenStoreFormatError, match="above the cap of 100"):
        TokenStore(path, max_bytes=100)


def test_writers_in_parallel_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        store = TokenStore(path)  # its own object, as another process would have
        try:
            for i in range(20):
                store.issue(f"{name}-{i}", TokenScope.up_to(1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(TokenStore(path).list()) == 80


def _legacy(tokens: list[dict[str, object]]) -> bytes:
    document = {"format": LEGACY_TOKENS_FORMAT, "tokens": tokens}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def test_an_old_token_file_is_migrated_on_read(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    purchase, admission, gone = "secret-purchase", "secret-admission", "secret-gone"
    path.write_bytes(
        _legacy(
            [
                {
                    "token_sha256": hash_token(purchase),
                    "label": f"purchase:{BUYER}:v2:1700000000:00000000000000ff",
                    "max_version": 2,
                    "created_at": 1700000000,
                    "revoked": False,
                },
                {
                    "token_sha256": hash_token(admission),
                    "label": "owner",
                    "max_version": 3,
                    "created_at": 1700000001,
                    "revoked": False,
                },
                {
                    "token_sha256": hash_token(gone),
                    "label": "gone",
                    "max_version": 1,
                    "created_at": 1700000002,
                    "revoked": True,
                },
            ]
        )
    )
    path.chmod(0o644)
    store = TokenStore(path)  # a server restart with the old file: no crash
    by_label = {r.label: r for r in store.list()}
    bought = by_label[f"purchase:{BUYER}:v2:1700000000:00000000000000ff"]
    assert bought.scope == TokenScope.exact(2) and bought.buyer == BUYER
    assert by_label["owner"].scope == TokenScope.up_to(3) and by_label["owner"].buyer is None
    assert by_label["gone"].revoked
    with pytest.raises(ScopeError):  # the old "up to" purchase no longer opens v1
        store.check(purchase, 1)
    assert store.check(admission, 1).label == "owner"
    with pytest.raises(RevokedTokenError):
        store.check(gone, 1)
    assert _lines(path)[0] == {"format": TOKENS_FORMAT}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r.label for r in store.revoke_buyer(BUYER)] == [bought.label]


def _old_token(label: str, secret: str) -> dict[str, object]:
    return {
        "token_sha256": hash_token(secret),
        "label": label,
        "max_version": 1,
        "created_at": 1,
        "revoked": False,
    }


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([{"label": "x"}], "not a valid cotune-dataset-tokens/1 file"),
        ([_old_token("x", "s1"), _old_token("x", "s2")], "cannot migrate.*issued twice"),
    ],
)
def test_a_broken_old_token_file_is_a_clear_error(
    tmp_path: Path, tokens: list[dict[str, object]], message: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(_legacy(tokens))
    with pytest.raises(TokenStoreFormatError, match=message):
        TokenStore(path)
    assert json.loads(path.read_bytes())["format"] == LEGACY_TOKENS_FORMAT  # left as it was


# --- the reader, property-tested ----------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(1, 5)),
        st.tuples(st.just("buy"), st.integers(1, 3)),
        st.tuples(st.just("revoke"), st.integers(0, 20)),
    ),
    max_size=12,
)


def _journal(ops: list[tuple[str, int]], directory: Path) -> tuple[bytes, list[tuple[str, bool]]]:
    """Run ``ops`` on a fresh store; the journal's bytes and each token's (label, revoked)."""
    path = directory / "tokens.json"
    store = TokenStore(path)
    for n, (op, value) in enumerate(ops):
        if op == "admit":
            store.issue(f"admit-{n}", TokenScope.up_to(value))
        elif op == "buy":
            with contextlib.suppress(ReceiptRevokedError):  # a receipt revoked earlier
                store.issue_for_receipt(f"buy-{n}", 1, BUYER, value)
        elif store.list():
            records = store.list()
            store.revoke(records[value % len(records)].label)
    data = path.read_bytes() if path.exists() else b""
    return data, [(r.label, r.revoked) for r in store.list()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, cut=st.integers(0, 10**6))
def test_every_prefix_of_a_journal_reads_as_its_whole_lines(
    ops: list[tuple[str, int]], cut: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, state = _journal(ops, Path(tmp))
        assert [(r.label, r.revoked) for r in TokenStore(Path(tmp) / "tokens.json").list()] == (
            state
        )
        prefix = data[: cut % (len(data) + 1)]
        cut_path = Path(tmp) / "cut.json"
        cut_path.write_bytes(prefix)
        # A crash can leave any prefix: it reads as the events whose lines are whole.
        whole = prefix[: prefix.rfind(b"\n") + 1]
        replay = Path(tmp) / "replay.json"
        replay.write_bytes(whole)
        assert TokenStore(cut_path).list() == TokenStore(replay).list()


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_after_a_journal_read_or_fail_cleanly(tail: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.json"
        TokenStore(path).issue("base", TokenScope.up_to(1))
        with path.open("ab") as handle:
            handle.write(tail)
        try:
            records = TokenStore(path).list()
        except TokenStoreFormatError:
            return
        assert records[0].label == "base"


@settings(max_examples=200, deadline=None)
@given(
    event=st.dictionaries(
        st.sampled_from(
            [
                *("op", "token_sha256", "label", "scope", "created_at"),
                *("buyer", "receipt_id", "at", "reason", "format"),
            ]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
            max_leaves=6,
        ),
    )
)
def test_any_json_event_reads_or_fails_cleanly(event: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.json"
        line = json.dumps(event).encode() + b"\n"
        path.write_bytes(b'{"format":"cotune-dataset-tokens/2"}\n' + line)
        with contextlib.suppress(TokenStoreFormatError):  # anything else fails the test
            TokenStore(path).list()


def test_the_lock_file_is_private(tmp_path: Path) -> None:
    TokenStore(tmp_path / "tokens.json").issue("x", TokenScope.up_to(1))
    lock = tmp_path / "tokens.json.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_revoking_a_receipt_fits_however_often_its_token_was_replaced(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path, max_bytes=4096)
    claims = 0
    with pytest.raises(TokenStoreFullError):
        while True:  # a buyer who claims again and again: each claim replaces the last
            store.issue_for_receipt(f"claim-{claims}", 1, BUYER, 7)
            claims += 1
    assert claims >= 3
    # The publisher's revocation covers the replaced tokens too: it must still fit.
    revoked = store.revoke_receipt(7)
    assert len(revoked) == claims
    assert all(r.revocation and r.revocation.reason is RevokedBy.PUBLISHER for r in revoked)
    assert path.stat().st_size <= 4096


def test_a_writer_waiting_for_another_process_does_not_stall_readers(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path)
    token = store.issue("member", TokenScope.up_to(1))
    held = os.open(tmp_path / "tokens.json.lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # another process (the CLI revoking) holds the lock
    waiting = threading.Thread(target=store.issue, args=("later", TokenScope.up_to(1)))
    try:
        waiting.start()
        time.sleep(0.3)  # the issue now waits for the lock
        checked: list[str] = []
        reader = threading.Thread(target=lambda: checked.append(store.check(token, 1).label))
        reader.start()
        reader.join(timeout=5)
        assert checked == ["member"]  # a download is not held up by the waiting writer
    finally:
        fcntl.flock(held, fcntl.LOCK_UN)
        os.close(held)
        waiting.join()
    assert [r.label for r in store.list()] == ["member", "later"]
