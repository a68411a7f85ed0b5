"""Sending transactions: local signing, nonces shared by concurrent senders, revert decoding."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.exceptions import TimeExhausted, Web3RPCError

from cotune.chain.errors import ErrorDecoder, RevertError, TransactionError, revert_data
from cotune.chain.events import Event, decode_logs

if TYPE_CHECKING:
    from web3 import Web3

GAS_MARGIN = 1.25
"""Estimated gas is scaled by this margin: estimates can fall short when state moves."""


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction and the cotune events it emitted."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: list[Event] = field(default_factory=list)

    def first(self, cls: type[Event]) -> Any:
        """The first event of type ``cls``; raises ``LookupError`` when there is none."""
        for event in self.events:
            if isinstance(event, cls):
                return event
        raise LookupError(f"transaction {self.tx_hash} emitted no {cls.__name__}")

    def all(self, cls: type[Event]) -> list[Any]:
        """Every event of type ``cls``, in log order."""
        return [e for e in self.events if isinstance(e, cls)]


class NonceManager:
    """Hands out nonces per address so concurrent senders from one account never collide."""

    def __init__(self, w3: Web3) -> None:
        self._w3 = w3
        self._next: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, address: str) -> threading.Lock:
        """The lock that serialises nonce use for ``address``."""
        with self._guard:
            return self._locks.setdefault(address, threading.Lock())

    def peek(self, address: str) -> int:
        """The next nonce (hold ``lock(address)``): the larger of ours and the node's."""
        pending = self._w3.eth.get_transaction_count(address, "pending")  # type: ignore[arg-type]
        return max(self._next.get(address, 0), pending)

    def advance(self, address: str, used: int) -> None:
        """Record that ``used`` was broadcast (hold ``lock(address)``)."""
        self._next[address] = used + 1

    def reset(self, address: str) -> None:
        """Forget the local count, e.g. after a send failed in an unknown way."""
        self._next.pop(address, None)


class Transactor:
    """Signs and sends transactions for one account, decoding reverts with ``decoder``."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        nonces: NonceManager,
        decoder: ErrorDecoder,
        *,
        receipt_timeout: float = 120.0,
    ) -> None:
        self.w3 = w3
        self.account = account
        self._nonces = nonces
        self._decoder = decoder
        self._receipt_timeout = receipt_timeout

    @property
    def address(self) -> str:
        """The sending account's checksummed address."""
        return str(self.account.address)

    def send(self, contract: str, function: str, call: Any, *, value: int = 0) -> TxResult:
        """Estimate, sign, send and wait for ``call`` (a bound contract function or constructor).

        A revert at estimation raises ``RevertError`` before anything is broadcast, so a
        call that fails there costs no gas or stake. One that passes estimation and then
        reverts on chain (state or time moved in between) is decoded from a replay at
        its own block, and its gas is spent.
        """
        params: dict[str, Any] = {"from": self.address, "value": value}
        estimate = self._guard(contract, function, lambda: call.estimate_gas(params))
        params["gas"] = int(estimate * GAS_MARGIN)
        lock = self._nonces.lock(self.address)
        with lock:
            nonce = self._nonces.peek(self.address)
            params["nonce"] = nonce
            tx = self._guard(contract, function, lambda: call.build_transaction(params))
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError as exc:
                if "already known" not in str(exc).lower():
                    self._nonces.reset(self.address)
                    raise TransactionError(f"{contract}.{function}: node refused: {exc}") from exc
                tx_hash = signed.hash  # a retried send that had reached the node
            self._nonces.advance(self.address, nonce)
        return self._wait(contract, function, tx, tx_hash)

    def _wait(self, contract: str, function: str, tx: dict[str, Any], tx_hash: bytes) -> TxResult:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                HexBytes(tx_hash),
                timeout=self._receipt_timeout,
                poll_latency=0.05,
            )
        except TimeExhausted as exc:
            raise TransactionError(
                f"{contract}.{function}: 0x{bytes(tx_hash).hex()} not mined within "
                f"{self._receipt_timeout:.0f} s"
            ) from exc
        if receipt["status"] != 1:
            replay = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
            self._guard(
                contract,
                function,
                # at the block it was mined in: a reverted transaction changed nothing there
                lambda: self.w3.eth.call(replay, receipt["blockNumber"]),  # type: ignore[arg-type]
            )
            raise TransactionError(f"{contract}.{function}: transaction reverted without a reason")
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=decode_logs(receipt["logs"]),
        )

    def _guard(self, contract: str, function: str, action: Callable[[], Any]) -> Any:
        """Run ``action``; turn a revert into a ``RevertError`` naming the custom error."""
        return guard_call(self._decoder, contract, function, action)


def guard_call(
    decoder: ErrorDecoder, contract: str, function: str, action: Callable[[], Any]
) -> Any:
    """Run ``action``; re-raise a contract revert as a decoded ``RevertError``."""
    try:
        return action()
    except (RevertError, TransactionError):
        raise
    except Exception as exc:  # web3 and eth-tester raise reverts under many types
        data = revert_data(exc)
        if data is None:
            if "revert" in str(exc).lower():
                raise RevertError(contract, function, "Error", {"reason": str(exc)}) from exc
            raise
        error, args = decoder.decode(data)
        raise RevertError(contract, function, error, args) from exc


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
