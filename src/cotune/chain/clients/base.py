"""What every typed contract client shares: calls, sends and deployment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from cotune.chain.artifacts import load_artifact
from cotune.chain.connection import Chain
from cotune.chain.errors import ChainError
from cotune.chain.events import Event, decode_logs, event_topic
from cotune.chain.transactions import Transactor, TxResult, guard_call

E = TypeVar("E", bound=Event)


class ContractClient:
    """A deployed contract seen through its ABI, acting as one account (or read-only)."""

    CONTRACT: ClassVar[str] = ""

    def __init__(self, chain: Chain, address: str, account: LocalAccount | None = None) -> None:
        self.chain = chain
        self.address = to_checksum_address(address)
        self.contract = chain.w3.eth.contract(
            address=self.address, abi=load_artifact(self.CONTRACT).abi
        )
        self._sender: Transactor | None = chain.sender(account) if account is not None else None
        self.last_tx: TxResult | None = None
        """The receipt of this client's latest transaction (gas, events), for reporting."""

    def as_account(self, account: LocalAccount) -> Self:
        """The same contract, sending as ``account``."""
        return type(self)(self.chain, self.address, account)

    @property
    def account_address(self) -> str:
        """The address this client sends from."""
        return self._require_sender().address

    @classmethod
    def deploy(cls, chain: Chain, account: LocalAccount, *args: Any) -> tuple[Self, TxResult]:
        """Deploy the contract from ``account``; return a client and the deployment receipt."""
        artifact = load_artifact(cls.CONTRACT)
        factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        result = chain.sender(account).send(cls.CONTRACT, "constructor", factory.constructor(*args))
        receipt = chain.w3.eth.get_transaction_receipt(result.tx_hash)  # type: ignore[arg-type]
        address = receipt["contractAddress"]
        if address is None:
            raise ChainError(f"deploying {cls.CONTRACT} produced no contract address")
        return cls(chain, address, account), result

    def _call(self, function: str, *args: Any) -> Any:
        bound = self.contract.functions[function](*args)
        return guard_call(self.chain.decoder, self.CONTRACT, function, bound.call)

    def _events(self, kind: type[E], indexed: int, from_block: int = 0) -> list[E]:
        """This contract's ``kind`` events whose first indexed field is ``indexed``, in order."""
        logs = self.chain.w3.eth.get_logs(
            {
                "address": self.address,
                "fromBlock": from_block,
                "toBlock": "latest",
                "topics": [
                    "0x" + event_topic(kind).hex(),
                    "0x" + indexed.to_bytes(32, "big").hex(),
                ],
            }
        )
        events = [e for e in decode_logs(logs) if isinstance(e, kind)]
        return sorted(events, key=lambda e: e.position)

    def _guarded(self, function: str, action: Callable[[], Any]) -> Any:
        """Run ``action`` (a call or an estimate), decoding a revert into ``RevertError``."""
        return guard_call(self.chain.decoder, self.CONTRACT, function, action)

    def _send(self, function: str, *args: Any, value: int = 0) -> TxResult:
        bound = self.contract.functions[function](*args)
        self.last_tx = self._require_sender().send(self.CONTRACT, function, bound, value=value)
        return self.last_tx

    def _require_sender(self) -> Transactor:
        if self._sender is None:
            raise ChainError(f"this {self.CONTRACT} client is read-only: give it an account")
        return self._sender
