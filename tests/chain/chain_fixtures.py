"""Helpers for chain tests, importable as ``chain_fixtures`` (conftest is not importable)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from cotune.chain import Chain, RevertError, SessionParams


@dataclass(frozen=True)
class Enclave:
    """A registered dev enclave: its signer account, HPKE key, measurement and id."""

    account: LocalAccount
    hpke_public_key: bytes
    measurement: bytes
    enclave_id: int


def session_params(chain: Chain, enclave: Enclave, **overrides: object) -> SessionParams:
    """Sensible session parameters pinned to ``enclave``; deadlines relative to chain time."""
    now = chain.timestamp()
    values: dict[str, object] = {
        "enclave_id": enclave.enclave_id,
        "measurement": enclave.measurement,
        "quorum": 2,
        "max_contributors": 3,
        "submit_deadline": now + 1000,
        "training_deadline": now + 5000,
        "min_stake": 10**15,
    }
    values.update(overrides)
    return SessionParams(**values)  # type: ignore[arg-type]


def expect_revert(error: str, action: Callable[[], object]) -> dict[str, Any]:
    """Run ``action``; it must revert with custom error ``error``. Returns the error's args."""
    with pytest.raises(RevertError) as info:
        action()
    assert info.value.error == error, str(info.value)
    return info.value.args_by_name


def in_fresh_thread(run: Callable[[], None]) -> None:
    """Call ``run`` on a new thread; re-raise whatever it raised.

    CPython 3.11 allocates its frame stack in chunks and unmaps a chunk as soon as the
    call depth drops back below it. Under pytest's deep stack the EVM's hot loop sat on
    such a boundary: a third of the run went to page faults (perf:
    ``_PyThreadState_BumpFramePointerSlow``). A new thread starts at a shallow,
    pytest-independent depth.
    """
    raised: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # handed to the test's thread below
            raised.append(exc)

    thread = threading.Thread(target=target, name="state machine", daemon=True)
    thread.start()
    thread.join()
    if raised:
        raise raised[0]


class SnapshotStage:
    """Contracts deployed once on a chain, and the snapshot every example starts from.

    Each example reverts to the snapshot, so it sees untouched contracts without paying
    for a deployment; it gets a new ``Chain`` so that no nonce cached by an earlier
    example outlives the revert. Subclasses deploy, then call ``__init__``.
    """

    def __init__(self, chain: Chain) -> None:
        self.w3, self.url, self.accounts = chain.w3, chain.url, chain.dev_accounts
        self._snapshot = self._rpc("evm_snapshot")

    def fresh_chain(self) -> Chain:
        """The chain at the snapshot, with no nonce cached from an earlier example."""
        self._rpc("evm_revert", self._snapshot)
        self._snapshot = self._rpc("evm_snapshot")
        return Chain(self.w3, self.url, self.accounts)

    def _rpc(self, method: str, *params: object) -> Any:
        response = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        assert "error" not in response, f"{method}: {response}"
        return response["result"]
