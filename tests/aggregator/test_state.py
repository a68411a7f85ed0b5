"""The aggregator's persistent state store."""

import itertools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cotune.aggregator.state import (
    SessionRecord,
    SqliteStateStore,
    Stage,
    StateStore,
    open_state_store,
)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteStateStore]:
    location = ":memory:" if request.param == "memory" else tmp_path / "state.db"
    opened = SqliteStateStore(location)
    yield opened
    opened.close()


def test_open_state_store_gives_a_sqlite_store(tmp_path: Path) -> None:
    for location in (":memory:", tmp_path / "a.db", str(tmp_path / "b.db")):
        opened = open_state_store(location)
        assert isinstance(opened, StateStore)
        assert isinstance(opened, SqliteStateStore)
        opened.close()
    assert (tmp_path / "a.db").is_file()
    assert (tmp_path / "b.db").is_file()


# ---- enqueue / get / sessions ------------------------------------------------------------


def test_new_session_starts_queued(store: SqliteStateStore) -> None:
    record = store.enqueue(1)
    assert record.session_id == 1
    assert record.stage is Stage.QUEUED
    assert record.attempts == 0
    assert record.error is None
    assert record.result == {}
    assert set(record.timestamps) == {"queued"}
    assert record.created_at == record.updated_at == record.timestamps["queued"]
    assert store.get(1) == record


def test_get_untracked_is_none(store: SqliteStateStore) -> None:
    assert store.get(42) is None
    assert store.sessions() == []


def test_enqueue_is_idempotent(store: SqliteStateStore) -> None:
    first = store.enqueue(1)
    advanced = store.advance(1, Stage.UPLOADED, {"adapter": "ab"})
    again = store.enqueue(1)
    assert again == advanced  # nothing reset
    assert again.stage is Stage.UPLOADED
    assert again.created_at == first.created_at
    assert again.result == {"adapter": "ab"}
    assert [r.session_id for r in store.sessions()] == [1]


def test_sessions_sorted_by_id(store: SqliteStateStore) -> None:
    for session_id in (5, 2, 9, 2, 5):
        store.enqueue(session_id)
    assert [r.session_id for r in store.sessions()] == [2, 5, 9]


# ---- advance / fail / note_attempt -------------------------------------------------------


def test_advance_merges_results_and_timestamps(store: SqliteStateStore) -> None:
    queued = store.enqueue(3)
    uploaded = store.advance(3, Stage.UPLOADED, {"adapter": "cid1", "report": "cid2"})
    assert uploaded.stage is Stage.UPLOADED
    assert uploaded.result == {"adapter": "cid1", "report": "cid2"}
    assert set(uploaded.timestamps) == {"queued", "uploaded"}
    assert uploaded.timestamps["queued"] == queued.timestamps["queued"]
    assert uploaded.timestamps["uploaded"] >= queued.timestamps["queued"]
    assert uploaded.updated_at >= queued.updated_at
    assert uploaded.created_at == queued.created_at

    finalized = store.advance(3, Stage.FINALIZED, {"tx": "0xabc", "report": "cid3"})
    assert finalized.result == {"adapter": "cid1", "report": "cid3", "tx": "0xabc"}
    assert set(finalized.timestamps) == {"queued", "uploaded", "finalized"}

    done = store.advance(3, Stage.DONE)
    assert done.stage is Stage.DONE
    assert done.result == finalized.result
    assert store.get(3) == done


def test_advance_untracked_raises(store: SqliteStateStore) -> None:
    with pytest.raises(KeyError):
        store.advance(9, Stage.UPLOADED)
    assert store.get(9) is None


def test_fail_sets_error_and_keeps_results(store: SqliteStateStore) -> None:
    store.enqueue(4)
    store.advance(4, Stage.UPLOADED, {"adapter": "cid"})
    store.fail(4, "chain unreachable")
    record = store.get(4)
    assert record is not None
    assert record.stage is Stage.FAILED
    assert record.error == "chain unreachable"
    assert record.result == {"adapter": "cid"}
    assert {"queued", "uploaded", "failed"} <= set(record.timestamps)


def test_advance_after_fail_clears_error(store: SqliteStateStore) -> None:
    store.enqueue(4)
    store.fail(4, "boom")
    record = store.advance(4, Stage.UPLOADED)
    assert record.stage is Stage.UPLOADED
    assert record.error is None


def test_fail_untracked_creates_nothing(store: SqliteStateStore) -> None:
    store.fail(8, "nope")
    assert store.get(8) is None


def test_note_attempt_counts_and_stamps(store: SqliteStateStore) -> None:
    store.enqueue(6)
    store.note_attempt(6, "compute")
    store.note_attempt(6, "finalize")
    record = store.get(6)
    assert record is not None
    assert record.attempts == 2
    assert {"queued", "compute", "finalize"} <= set(record.timestamps)
    assert record.stage is Stage.QUEUED  # an attempt does not move the stage


def test_records_do_not_leak_between_sessions(store: SqliteStateStore) -> None:
    store.enqueue(1)
    store.enqueue(2)
    store.advance(1, Stage.UPLOADED, {"x": 1})
    store.note_attempt(1, "compute")
    store.fail(1, "e")
    two = store.get(2)
    assert two is not None
    assert (two.stage, two.result, two.attempts, two.error) == (Stage.QUEUED, {}, 0, None)


# ---- logs --------------------------------------------------------------------------------


def test_logs_are_per_session_in_order_and_paged_with_after(store: SqliteStateStore) -> None:
    a1 = store.log(1, "first")
    b1 = store.log(2, "other session")
    a2 = store.log(1, "second")
    a3 = store.log(1, "third")
    assert a1.line_id < b1.line_id < a2.line_id < a3.line_id
    assert [line.message for line in store.logs(1)] == ["first", "second", "third"]
    assert store.logs(1) == [a1, a2, a3]
    assert store.logs(2) == [b1]
    assert store.logs(1, after=a1.line_id) == [a2, a3]
    assert store.logs(1, after=b1.line_id) == [a2, a3]
    assert store.logs(1, after=a2.line_id) == [a3]
    assert store.logs(1, after=a3.line_id) == []
    assert store.logs(3) == []
    assert a1.session_id == 1
    assert a1.at <= a3.at


def test_log_messages_are_kept_verbatim(store: SqliteStateStore) -> None:
    message = "line with 'quotes', \"double\", ünïcode and\nnewline; DROP TABLE logs;"
    store.log(1, message)
    assert [line.message for line in store.logs(1)] == [message]


# ---- kv ----------------------------------------------------------------------------------


def test_values(store: SqliteStateStore) -> None:
    assert store.get_value("enclave_id") is None
    store.set_value("enclave_id", "0x01")
    assert store.get_value("enclave_id") == "0x01"
    store.set_value("enclave_id", "0x02")
    assert store.get_value("enclave_id") == "0x02"
    store.set_value("other", "")
    assert store.get_value("other") == ""
    assert store.get_value("enclave_id") == "0x02"


# ---- persistence -------------------------------------------------------------------------


def test_file_store_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = SqliteStateStore(path)
    first.enqueue(1)
    first.enqueue(2)
    first.advance(1, Stage.UPLOADED, {"adapter": "cid", "nested": {"a": [1, 2]}})
    first.advance(1, Stage.FINALIZED, {"tx": "0x1"})
    first.note_attempt(2, "compute")
    first.fail(2, "bad spec")
    lines = [first.log(1, "one"), first.log(2, "two"), first.log(1, "three")]
    first.set_value("enclave_id", "0xabc")
    before = [r.to_dict() for r in first.sessions()]
    first.close()

    second = SqliteStateStore(path)
    try:
        assert [r.to_dict() for r in second.sessions()] == before
        one = second.get(1)
        assert one is not None
        assert one.stage is Stage.FINALIZED
        assert one.result == {"adapter": "cid", "nested": {"a": [1, 2]}, "tx": "0x1"}
        two = second.get(2)
        assert two is not None
        assert (two.stage, two.error, two.attempts) == (Stage.FAILED, "bad spec", 1)
        assert second.logs(1) == [lines[0], lines[2]]
        assert second.logs(2) == [lines[1]]
        assert second.get_value("enclave_id") == "0xabc"
        # enqueue after restart keeps the old record; new log lines continue the ids
        assert second.enqueue(1).stage is Stage.FINALIZED
        assert second.log(1, "four").line_id > lines[-1].line_id
    finally:
        second.close()


def test_memory_stores_are_separate() -> None:
    first, second = SqliteStateStore(":memory:"), SqliteStateStore(":memory:")
    first.enqueue(1)
    assert second.get(1) is None
    first.close()
    second.close()


# ---- records and stages ------------------------------------------------------------------


def test_to_dict_is_json(store: SqliteStateStore) -> None:
    store.enqueue(1)
    record = store.advance(1, Stage.UPLOADED, {"k": "v"})
    document = record.to_dict()
    assert json.loads(json.dumps(document)) == document
    assert document["stage"] == "uploaded"
    assert document["session_id"] == 1
    assert document["result"] == {"k": "v"}
    assert set(document) == {
        "session_id",
        "stage",
        "created_at",
        "updated_at",
        "attempts",
        "error",
        "timestamps",
        "not_before",
        "faults",
        "result",
    }


def test_stage_rank_orders_the_pipeline() -> None:
    order = [Stage.QUEUED, Stage.UPLOADED, Stage.FINALIZED, Stage.SLASHED, Stage.DONE]
    assert [s.rank for s in order] == list(range(len(order)))
    assert all(a.rank < b.rank for a, b in itertools.pairwise(order))
    assert all(Stage.FAILED.rank > s.rank for s in order)
    assert max(Stage, key=lambda s: s.rank) is Stage.FAILED
    assert sorted(reversed(list(Stage)), key=lambda s: s.rank) == list(Stage)


def test_stage_values_round_trip() -> None:
    for stage in Stage:
        assert Stage(stage.value) is stage
        assert stage == stage.value


results = st.dictionaries(
    st.text(max_size=5), st.integers() | st.text(max_size=5) | st.booleans(), max_size=4
)


@given(steps=st.lists(st.tuples(st.sampled_from(list(Stage)), results), max_size=6))
def test_advance_result_is_the_union_of_all_results(
    steps: list[tuple[Stage, dict[str, Any]]],
) -> None:
    opened = SqliteStateStore(":memory:")
    try:
        opened.enqueue(1)
        expected: dict[str, Any] = {}
        record: SessionRecord | None = opened.get(1)
        for stage, result in steps:
            expected |= result
            record = opened.advance(1, stage, result)
        assert record is not None
        assert record.result == expected
        assert record.stage is (steps[-1][0] if steps else Stage.QUEUED)
        assert set(record.timestamps) == {"queued"} | {s.value for s, _ in steps}
    finally:
        opened.close()


# ---- retries --------------------------------------------------------------------------------


def test_an_outage_gives_the_attempt_back_and_counts_a_fault(store: SqliteStateStore) -> None:
    store.enqueue(3)
    store.note_attempt(3, "started")
    record = store.retry_later(3, "StorageError: timeout", 123.0, infrastructure=True)
    assert (record.attempts, record.faults, record.not_before) == (0, 1, 123.0)
    assert record.error == "StorageError: timeout"
    assert record.stage is Stage.QUEUED
    store.note_attempt(3, "started")
    record = store.retry_later(3, "ValueError: bug", 456.0, infrastructure=False)
    assert (record.attempts, record.faults, record.not_before) == (1, 0, 456.0)


def test_progress_clears_the_retry_state(store: SqliteStateStore) -> None:
    store.enqueue(4)
    store.retry_later(4, "StorageError: down", 99.0, infrastructure=True)
    record = store.advance(4, Stage.UPLOADED)
    assert (record.faults, record.not_before, record.error) == (0, 0.0, None)


def test_reset_attempts(store: SqliteStateStore) -> None:
    store.enqueue(5)
    for _ in range(3):
        store.note_attempt(5, "started")
    store.retry_later(5, "x", 10.0, infrastructure=False)
    store.reset_attempts(5)
    record = store.get(5)
    assert record is not None
    assert (record.attempts, record.faults, record.not_before) == (0, 0, 0.0)


def test_a_database_from_an_older_release_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE sessions (session_id INTEGER PRIMARY KEY, stage TEXT NOT NULL, "
        "created_at REAL NOT NULL, updated_at REAL NOT NULL, attempts INTEGER NOT NULL "
        "DEFAULT 0, error TEXT, result TEXT NOT NULL DEFAULT '{}', timestamps TEXT NOT NULL "
        "DEFAULT '{}');"
        "INSERT INTO sessions (session_id, stage, created_at, updated_at, attempts) "
        "VALUES (9, 'queued', 1.0, 1.0, 2);"
    )
    old.commit()
    old.close()
    store = SqliteStateStore(path)
    try:
        record = store.get(9)
        assert record is not None
        assert (record.attempts, record.faults, record.not_before) == (2, 0, 0.0)
    finally:
        store.close()
