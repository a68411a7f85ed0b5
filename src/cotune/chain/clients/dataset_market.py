"""Typed client of ``DatasetMarket``: listings of signed dataset versions, purchases, proceeds."""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from cotune.chain.clients.base import ContractClient
from cotune.chain.events import Purchased, Withdrawn
from cotune.chain.transactions import TxResult


def dataset_key(publisher: str, dataset_id: str) -> bytes:
    """The key a dataset's listings live under (``DatasetMarket.datasetKey``), computed locally."""
    return keccak(
        abi_encode(
            ["address", "bytes32"],
            [to_checksum_address(publisher), keccak(dataset_id.encode())],
        )
    )


@dataclass(frozen=True)
class Listing:
    """One version on sale: the signed entry it pins, its price, whether it is on sale now."""

    entry_hash: bytes
    price: int
    active: bool


class DatasetMarketClient(ContractClient):
    """List dataset versions (as their publisher), buy them, check receipts, withdraw."""

    CONTRACT = "DatasetMarket"

    # publisher
    def list_version(
        self, dataset_id: str, version: int, entry_hash: bytes, price: int
    ) -> TxResult:
        """List or re-price a version of the sender's dataset, pinning its entry hash."""
        return self._send("list", dataset_id, version, entry_hash, price)

    def delist(self, dataset_id: str, version: int) -> TxResult:
        """Stop selling a version."""
        return self._send("delist", dataset_id, version)

    def withdraw(self) -> int:
        """Send the sender's proceeds to it; returns the amount in wei."""
        event: Withdrawn = self._send("withdraw").first(Withdrawn)
        return event.amount

    # buyer
    def buy(self, key: bytes, version: int, price: int) -> Purchased:
        """Pay ``price`` wei for a version; returns the receipt event."""
        event: Purchased = self._send("buy", key, version, value=price).first(Purchased)
        return event

    # anyone
    def listing(self, key: bytes, version: int) -> Listing:
        """A version's listing (zeroes when it was never listed)."""
        entry_hash, price, active = self._call("listingOf", key, version)
        return Listing(bytes(entry_hash), int(price), bool(active))

    def receipt_of(self, key: bytes, version: int, buyer: str) -> int:
        """The receipt id of ``buyer``'s purchase of a version, 0 when none."""
        return int(self._call("receiptOf", key, version, buyer))

    def publisher_of(self, key: bytes) -> str:
        """The address that listed the dataset (the zero address when never listed)."""
        return str(self._call("publisherOf", key))

    def proceeds(self, publisher: str) -> int:
        """Wei the publisher can withdraw."""
        return int(self._call("proceeds", publisher))

    def receipt_count(self) -> int:
        """How many purchases the market has recorded."""
        return int(self._call("receiptCount"))
