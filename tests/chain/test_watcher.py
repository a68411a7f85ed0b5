"""The event watcher: chain order, confirmation depth, and a cursor that survives restarts."""

from pathlib import Path

import pytest
from chain_fixtures import Enclave, session_params

from cotune.chain import Chain, ChainError, Contracts, Deployment, EventWatcher
from cotune.chain.events import Event, QuorumReached, SessionCreated, Submitted


def _watcher(chain: Chain, deployment: Deployment, cursor: Path, **kwargs: object) -> EventWatcher:
    return EventWatcher(
        chain,
        [deployment.coordinator],
        cursor_path=cursor,
        start_block=deployment.block_number,
        **kwargs,  # type: ignore[arg-type]
    )


def _open_sessions(chain: Chain, contracts: Contracts, enclave: Enclave, n: int) -> list[int]:
    return [contracts.coordinator.create_session(session_params(chain, enclave)) for _ in range(n)]


def test_exactly_once_across_restarts(
    chain: Chain, deployment: Deployment, contracts: Contracts, enclave: Enclave, tmp_path: Path
) -> None:
    cursor = tmp_path / "cursor.json"
    first = _open_sessions(chain, contracts, enclave, 3)
    seen: list[Event] = []
    assert _watcher(chain, deployment, cursor).poll(seen.append) == 3
    assert [e.session_id for e in seen if isinstance(e, SessionCreated)] == first
    assert [e.position for e in seen] == sorted(e.position for e in seen)

    assert _watcher(chain, deployment, cursor).poll(seen.append) == 0  # restarted: no repeats
    later = _open_sessions(chain, contracts, enclave, 2)
    fresh: list[Event] = []
    assert _watcher(chain, deployment, cursor).poll(fresh.append) == 2
    assert [e.session_id for e in fresh if isinstance(e, SessionCreated)] == later


def test_crash_in_handler_redelivers_only_the_unhandled(
    chain: Chain, deployment: Deployment, contracts: Contracts, enclave: Enclave, tmp_path: Path
) -> None:
    cursor = tmp_path / "cursor.json"
    ids = _open_sessions(chain, contracts, enclave, 3)
    handled: list[int] = []

    def crash_on_second(event: Event) -> None:
        assert isinstance(event, SessionCreated)
        if event.session_id == ids[1]:
            raise RuntimeError("killed mid-event")
        handled.append(event.session_id)

    with pytest.raises(RuntimeError):
        _watcher(chain, deployment, cursor).poll(crash_on_second)
    assert handled == ids[:1]

    def record(event: Event) -> None:
        assert isinstance(event, SessionCreated)
        handled.append(event.session_id)

    assert _watcher(chain, deployment, cursor).poll(record) == 2
    assert handled == ids


def test_confirmation_depth(
    chain: Chain, deployment: Deployment, contracts: Contracts, enclave: Enclave, tmp_path: Path
) -> None:
    watcher = _watcher(chain, deployment, tmp_path / "c.json", confirmations=3)
    chain.mine(3)
    watcher.poll(lambda _e: None)  # consume the deployment's own history
    _open_sessions(chain, contracts, enclave, 1)
    seen: list[Event] = []
    assert watcher.poll(seen.append) == 0
    chain.mine(2)
    assert watcher.poll(seen.append) == 0
    chain.mine(1)
    assert watcher.poll(seen.append) == 1
    assert isinstance(seen[0], SessionCreated)


def test_small_batches_and_type_filter(
    chain: Chain,
    deployment: Deployment,
    contracts: Contracts,
    enclave: Enclave,
    contributors: list,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    session_id = contracts.coordinator.create_session(
        session_params(chain, enclave, quorum=1, max_contributors=2)
    )
    for who in contributors[:2]:
        contracts.coordinator.as_account(who).submit(
            session_id, b"\x01" * 32, enclave.hpke_public_key, stake=10**15
        )
    chain.mine(2)
    seen: list[Event] = []
    watcher = _watcher(
        chain,
        deployment,
        tmp_path / "c.json",
        batch_blocks=1,
        event_types=[QuorumReached, Submitted],
    )
    assert watcher.poll(seen.append) == 3
    assert [type(e) for e in seen] == [Submitted, Submitted, QuorumReached]
    assert watcher.cursor.block == chain.block_number()


def test_cursor_from_another_deployment_is_refused(
    chain: Chain, deployment: Deployment, tmp_path: Path
) -> None:
    cursor = tmp_path / "c.json"
    _watcher(chain, deployment, cursor).poll(lambda _e: None)
    with pytest.raises(ChainError, match="cursor for chain"):
        EventWatcher(chain, [deployment.model_nft], cursor_path=cursor)
    cursor.write_text("{not json")
    with pytest.raises(ChainError, match="unreadable"):
        _watcher(chain, deployment, cursor)
