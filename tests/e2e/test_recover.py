"""``recover``: a session stuck by an external fault finishes once the fault is gone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotune.aggregator.state import Stage
from cotune.chain.events import SessionFinalized, decode_logs

if TYPE_CHECKING:  # the fixtures' types, from this directory's conftest
    from conftest import Env


def _finalize_events(env: Env, session_id: int) -> int:
    logs = env.chain.w3.eth.get_logs(
        {"address": env.deployment.coordinator, "fromBlock": 0, "toBlock": "latest"}
    )
    return sum(
        1
        for e in decode_logs(logs)
        if isinstance(e, SessionFinalized) and e.session_id == session_id
    )


def test_a_lost_eval_set_fails_the_session_and_recover_finishes_it(
    env: Env, clean_files: list[bytes]
) -> None:
    session = env.open_session(2)
    for party, data in zip(session.parties, clean_files, strict=False):
        session.submit_clean(party, data)
    blob = env.store.path_of(session.info().eval_set_commitment.hex())
    aside = blob.with_name(blob.name + ".aside")
    blob.rename(aside)  # the storage lost the owner's eval set

    record = session.run()
    assert record.stage is Stage.FAILED
    assert record.error is not None and "eval set" in record.error
    assert _finalize_events(env, session.session_id) == 0
    assert env.aggregator.poll() == []  # a failed session waits for an operator

    aside.rename(blob)
    steps: list[tuple[int, int]] = []
    env.aggregator.processor.on_train_step = lambda step, total, _loss: steps.append((step, total))
    assert env.aggregator.recover(session.session_id) is Stage.DONE
    assert steps and steps[-1][0] == steps[-1][1]  # progress reported up to the last step
    assert _finalize_events(env, session.session_id) == 1
    assert env.aggregator.recover(session.session_id) is Stage.DONE  # idempotent
    assert _finalize_events(env, session.session_id) == 1
    logs = [line.message for line in env.aggregator.state.logs(session.session_id)]
    assert any(m.startswith("recovery: resuming from") for m in logs)
    session.assert_outcome({}, env.workdir / "downloads")
    env.aggregator.processor.on_train_step = None
