"""The aggregator under faults nobody controls and owners who ask too much.

A storage outage never rejects nor slashes anyone: the session backs off and finishes. A
process killed under a session counts as an attempt, so a crash loop ends. An owner's
session over the operator's limits is refused before it runs, and the next session runs.
A session past its training deadline stops without finalizing.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pytest
import requests

import cotune.aggregator.pipeline as pipeline
import cotune.aggregator.service as service
from conftest import CHEAP_SPEC, jsonl
from cotune.aggregator.pipeline import MAX_ATTEMPTS
from cotune.aggregator.spec import SessionSpec
from cotune.aggregator.state import Stage
from cotune.chain.clients.coordinator import ContributionStatus, SessionState
from cotune.chain.errors import ChainError
from cotune.chain.limits import MAX_CONTRIBUTORS
from cotune.sdk.client import SessionOptions, SessionOptionsError
from cotune.storage.blob import BlobRef
from cotune.storage.errors import StorageError
from cotune.training.config import LoraHyperparams
from cotune.training.rules import Reason

if TYPE_CHECKING:
    from conftest import Env


class _Killed(BaseException):
    """Stands in for a SIGKILL: nothing in the aggregator catches it."""


def _clock_ahead(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = time.time
    monkeypatch.setattr(service.time, "time", lambda: real() + seconds)


def test_a_storage_outage_is_retried_and_blames_no_one(
    env: Env, clean_files: list[bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    session = env.open_session(3)
    for party, data in zip(session.parties, clean_files, strict=True):
        session.submit_clean(party, data)
    outage = {"left": 2}
    real_open = type(env.store).open

    def flaky_open(store: Any, ref: BlobRef) -> BinaryIO:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise StorageError("the object store timed out")
        return real_open(store, ref)

    monkeypatch.setattr(type(env.store), "open", flaky_open)
    record = session.run()
    assert record.stage is Stage.QUEUED  # not failed, nobody rejected
    assert (record.attempts, record.faults) == (0, 1)
    assert record.not_before > time.time() + 1  # backing off
    assert all(session.status(p) is ContributionStatus.SUBMITTED for p in session.parties)
    env.aggregator.poll()
    assert session.record().faults == 1  # not due yet: left alone
    _clock_ahead(monkeypatch, 20)
    assert session.run().faults == 2  # the second fault doubles the wait
    _clock_ahead(monkeypatch, 60)
    assert session.run().stage is Stage.DONE
    session.assert_outcome({}, tmp_path)
    logs = [line.message for line in env.aggregator.state.logs(session.session_id)]
    assert sum("no one is blamed" in m for m in logs) == 2


def test_a_crash_loop_gives_the_session_up(
    env: Env, clean_files: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    session = env.open_session(2)
    for party, data in zip(session.parties, clean_files, strict=False):
        session.submit_clean(party, data)

    def killed_at(point: str) -> None:
        if point == "fetched":
            raise _Killed(point)

    monkeypatch.setattr(pipeline, "fault_point", killed_at)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with pytest.raises(_Killed):
            env.aggregator.poll()
        assert session.record().attempts == attempt  # counted when it started
    record = session.run()
    assert record.stage is Stage.FAILED
    assert record.error is not None
    assert f"gave up after {MAX_ATTEMPTS} attempts" in record.error
    assert session.info().state is SessionState.TRAINING  # expires later: stakes go back


def test_an_owner_over_the_limits_is_refused_and_the_next_session_runs(
    env: Env, clean_files: list[bytes], tmp_path: Path
) -> None:
    party = env.party()
    greedy = env.owner.open_session(
        env.eval_set,
        SessionOptions(
            enclave_id=env.enclave_id,
            quorum=1,
            max_contributors=1,
            allow_list=(party.address,),
            pinned_measurement=env.measurement,
            spec=SessionSpec(hyperparams=LoraHyperparams(epochs=10**6)),
        ),
    )
    party.client.submit(greedy, clean_files[0])
    honest = env.open_session(2)
    for p, data in zip(honest.parties, clean_files, strict=False):
        honest.submit_clean(p, data)
    started = time.monotonic()
    env.aggregator.poll()
    record = env.aggregator.state.get(greedy)
    assert record is not None and record.stage is Stage.FAILED
    assert record.error is not None
    assert record.error.startswith("refused: the session asks for more than this aggregator")
    assert "worst-case steps" in record.error
    assert honest.record().stage is Stage.DONE
    assert time.monotonic() - started < 120  # a safety ceiling, not a benchmark
    honest.assert_outcome({}, tmp_path)


def test_a_session_past_its_training_deadline_stops_unfinalized(
    env: Env, clean_files: list[bytes]
) -> None:
    session = env.open_session(2)
    for party, data in zip(session.parties, clean_files, strict=False):
        session.submit_clean(party, data)
    env.chain.advance_time(session.info().training_deadline - env.chain.timestamp() + 5)
    record = session.run()
    assert record.stage is Stage.FAILED
    assert record.error is not None and "training deadline passed" in record.error
    assert session.info().state is SessionState.TRAINING
    assert record.attempts == 0  # refused before any work
    env.owner.contracts.coordinator.expire(session.session_id)
    party = session.parties[0]
    assert party.client.contracts.coordinator.claimable(session.session_id, party.address) > 0


def test_the_operators_time_budget_stops_a_session(
    env: Env, clean_files: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    session = env.open_session(2)
    for party, data in zip(session.parties, clean_files, strict=False):
        session.submit_clean(party, data)
    processor = env.aggregator.processor
    monkeypatch.setattr(
        processor, "limits", dataclasses.replace(processor.limits, max_session_seconds=1e-9)
    )
    record = session.run()
    assert record.stage is Stage.FAILED
    assert record.error is not None and "over the operator's budget" in record.error


@pytest.mark.parametrize(("quorum", "most"), [(3, MAX_CONTRIBUTORS + 1), (0, 2), (3, 2)])
def test_impossible_session_options_are_refused_before_anything_is_stored(
    env: Env, quorum: int, most: int
) -> None:
    files = env.store_files()
    options = SessionOptions(enclave_id=env.enclave_id, quorum=quorum, max_contributors=most)
    with pytest.raises(SessionOptionsError, match="quorum"):
        env.owner.open_session(env.eval_set, options)
    assert env.store_files() == files


def test_a_chain_fault_while_slashing_is_retried_not_forgiven(
    env: Env, clean_files: list[bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    session = env.open_session(3)
    *honest, bad = session.parties
    for party, data in zip(honest, clean_files, strict=False):
        session.submit_clean(party, data)
    session.upload_and_commit(bad, session.encrypt(bad, b"not json\n{}\n"))
    coordinator_type = type(env.aggregator.processor.contracts.coordinator)
    real_slash = coordinator_type.slash_with_proof
    faults = {"left": 1}

    def flaky_slash(self: Any, *args: Any) -> Any:
        if faults["left"]:
            faults["left"] -= 1
            raise ChainError("RPC: connection reset by peer")
        return real_slash(self, *args)

    monkeypatch.setattr(coordinator_type, "slash_with_proof", flaky_slash)
    record = session.run()
    assert record.stage is Stage.FINALIZED  # finalized, the slash still owed
    assert record.faults == 1 and "connection reset" in (record.error or "")
    assert session.status(bad) is ContributionStatus.SUBMITTED
    _clock_ahead(monkeypatch, 20)
    assert session.run().stage is Stage.DONE
    session.assert_outcome({bad.address: Reason.INVALID_LINES}, tmp_path)


def test_an_eval_set_with_nothing_to_score_fails_the_session_at_once(
    env: Env, clean_files: list[bytes]
) -> None:
    parties = [env.party() for _ in range(2)]
    eval_set = jsonl([{"instruction": "word " * 300, "output": "a"}] * 5)
    session_id = env.owner.open_session(
        eval_set,
        SessionOptions(
            enclave_id=env.enclave_id,
            quorum=2,
            max_contributors=2,
            allow_list=tuple(p.address for p in parties),
            pinned_measurement=env.measurement,
            spec=CHEAP_SPEC,
        ),
    )
    for party, data in zip(parties, clean_files, strict=False):
        party.client.submit(session_id, data)
    env.aggregator.poll()
    record = env.aggregator.state.get(session_id)
    assert record is not None and record.stage is Stage.FAILED
    assert record.attempts == 1  # one try: the eval set is the owner's, retrying cannot help
    assert "no eval example keeps a loss-carrying token" in (record.error or "")


def test_a_chain_outage_while_watching_is_waited_out(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_args: Any) -> None:
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(env.aggregator._watcher, "poll", down)
    env.aggregator.poll()  # no exception: the daemon lives on
    assert env.aggregator.watch_error == "ConnectionError: connection refused"
    monkeypatch.undo()
    env.aggregator.poll()
    assert env.aggregator.watch_error is None
