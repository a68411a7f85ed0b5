"""``connect(url)``: an in-process EVM (``embedded``) or any JSON-RPC node (``http://…``)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from cotune.chain.artifacts import CONTRACT_NAMES, load_artifact
from cotune.chain.errors import ChainError, ErrorDecoder
from cotune.chain.transactions import NonceManager, Transactor

EMBEDDED = "embedded"
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
"""The mnemonic anvil funds its dev accounts from (public: for local devnets only)."""
DEV_ACCOUNT_COUNT = 10

RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.HTTPError)
"""Transport failures retried with exponential backoff (a refused or dropped connection,
a timeout, an HTTP 429/5xx)."""


class Chain:
    """A connection to one chain: web3, its funded dev accounts, and per-account senders."""

    def __init__(self, w3: Web3, url: str, dev_accounts: list[LocalAccount]) -> None:
        self.w3 = w3
        self.url = url
        self.dev_accounts = dev_accounts
        self.decoder = ErrorDecoder(load_artifact(name).abi for name in CONTRACT_NAMES)
        self._nonces = NonceManager(w3)
        self._senders: dict[str, Transactor] = {}

    @property
    def is_embedded(self) -> bool:
        """Whether this is the in-process EVM."""
        return self.url == EMBEDDED

    @cached_property
    def chain_id(self) -> int:
        """The chain id (EIP-155)."""
        return int(self.w3.eth.chain_id)

    def sender(self, account: LocalAccount) -> Transactor:
        """The transaction sender for ``account``; one per address, sharing its nonces."""
        address = str(account.address)
        if address not in self._senders:
            self._senders[address] = Transactor(self.w3, account, self._nonces, self.decoder)
        return self._senders[address]

    def block_number(self) -> int:
        """The latest block number."""
        return int(self.w3.eth.block_number)

    def timestamp(self) -> int:
        """The latest block's timestamp (seconds)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def balance(self, address: str) -> int:
        """An address's balance in wei."""
        return int(self.w3.eth.get_balance(address))  # type: ignore[arg-type]

    def fund(self, address: str, wei: int, payer: LocalAccount | None = None) -> None:
        """Send ``wei`` from ``payer`` (default: the first dev account, on dev chains)."""
        if payer is None:
            if not self.dev_accounts:
                raise ChainError(f"{self.url} has no funded dev accounts to pay from")
            payer = self.dev_accounts[0]
        sender = self.sender(payer)
        with self._nonces.lock(sender.address):
            nonce = self._nonces.peek(sender.address)
            tx: dict[str, Any] = {
                "to": address,
                "value": wei,
                "gas": 21000,
                "nonce": nonce,
                "chainId": self.chain_id,
                "maxFeePerGas": 2 * self.w3.eth.get_block("latest")["baseFeePerGas"] + 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
            signed = payer.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            self._nonces.advance(sender.address, nonce)
        self.w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.05)

    def advance_time(self, seconds: int) -> int:
        """Move the chain's clock forward and mine a block (dev chains only); return its time."""
        target = self.timestamp() + seconds
        if self.is_embedded:
            self._tester().time_travel(target)
        else:
            self._dev_rpc("evm_setNextBlockTimestamp", [target])
            self._dev_rpc("evm_mine", [])
        return self.timestamp()

    def mine(self, blocks: int = 1) -> None:
        """Mine empty blocks (dev chains only)."""
        if self.is_embedded:
            self._tester().mine_blocks(blocks)
        else:
            self._dev_rpc("anvil_mine", [hex(blocks)])

    def _tester(self) -> Any:
        provider = self.w3.provider
        assert isinstance(provider, EthereumTesterProvider)
        return provider.ethereum_tester

    def _dev_rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in response:
            raise ChainError(f"{self.url} does not support {method}: {response['error']}")
        return response.get("result")


def connect(
    url: str = EMBEDDED, *, timeout: float = 30.0, retries: int = 6, backoff: float = 0.1
) -> Chain:
    """Connect to ``embedded`` (a fresh in-process EVM with funded accounts) or an RPC URL.

    Transient transport errors are retried ``retries`` times, sleeping ``backoff * 2**n``.
    """
    if url == EMBEDDED:
        provider = EthereumTesterProvider()
        tester: Any = provider.ethereum_tester
        keys = tester.backend.account_keys
        accounts = [Account.from_key(key.to_bytes()) for key in keys]
        return Chain(Web3(provider), url, accounts)
    if not url.startswith(("http://", "https://")):
        raise ChainError(f"unsupported chain URL {url!r}: use 'embedded' or an http(s):// RPC URL")
    w3 = Web3(
        HTTPProvider(
            url,
            request_kwargs={"timeout": timeout},
            exception_retry_configuration=ExceptionRetryConfiguration(
                errors=RETRYABLE, retries=retries, backoff_factor=backoff
            ),
        )
    )
    try:
        chain_id = int(w3.eth.chain_id)
    except requests.RequestException as exc:
        raise ChainError(f"cannot reach the chain at {url}: {exc}") from exc
    chain = Chain(w3, url, _dev_accounts_for(chain_id))
    return chain


def _dev_accounts_for(chain_id: int) -> list[LocalAccount]:
    """Anvil's well-known dev accounts on its dev chain id; none elsewhere."""
    if chain_id != 31337:
        return []
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        for i in range(DEV_ACCOUNT_COUNT)
    ]
