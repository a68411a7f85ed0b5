"""DatasetMarket on both backends: listings pinned to signed entries, purchases, proceeds.

A dataset's listings live under ``datasetKey(publisher, id)``, so only its publisher can
list, re-price or delist it; another account listing the same id gets a key of its own.
The first listing of a version pins its entry hash for good (delisting keeps the pin).
``buy`` takes exactly the price, once per buyer and version, and records a receipt id
counted from 1 across the market; receipts outlive delisting. Proceeds accrue to the
publisher until it withdraws them.

The key is computed locally (``dataset_key``) and checked against the contract's, for
chosen and for random publishers and ids. A state machine on the embedded EVM runs random
listings, delistings, purchases and withdrawals by two publishers and three buyers
against a Python model of listings, receipts and proceeds, and checks after every step
that the market holds exactly the proceeds not yet withdrawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from chain_fixtures import SnapshotStage, expect_revert, in_fresh_thread
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from cotune.chain import (
    Chain,
    Contracts,
    DatasetMarketClient,
    Deployment,
    Listing,
    TxResult,
    connect,
    dataset_key,
)
from cotune.chain.events import Delisted, Listed, Purchased, Withdrawn

ZERO_ADDRESS = "0x" + "00" * 20
ZERO_HASH = bytes(32)
UINT64_MAX = 2**64 - 1
ENTRY = keccak(text="cotune market entry: weather v3")
OTHER_ENTRY = keccak(text="cotune market entry: something else")
PRICE = 10**15
DATASET = "weather/hourly"
VERSION = 3
UNLISTED = Listing(ZERO_HASH, 0, False)


def gas_cost(chain: Chain, tx_hash: str) -> int:
    """Wei a mined transaction paid for gas."""
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def last_tx(client: DatasetMarketClient) -> TxResult:
    """The client's latest transaction (``withdraw`` returns only the amount)."""
    assert client.last_tx is not None
    return client.last_tx


@dataclass(frozen=True)
class Market:
    """A fresh market, two publishers and three buyers (dev accounts 1..5)."""

    chain: Chain
    client: DatasetMarketClient
    publishers: list[LocalAccount]
    buyers: list[LocalAccount]

    def as_(self, account: LocalAccount) -> DatasetMarketClient:
        return self.client.as_account(account)

    @property
    def publisher(self) -> LocalAccount:
        return self.publishers[0]

    @property
    def key(self) -> bytes:
        """The first publisher's ``DATASET``."""
        return dataset_key(self.publisher.address, DATASET)

    def list_default(self, price: int = PRICE) -> TxResult:
        """The first publisher lists ``DATASET`` version ``VERSION`` pinned to ``ENTRY``."""
        return self.as_(self.publisher).list_version(DATASET, VERSION, ENTRY, price)

    def balance(self) -> int:
        return self.chain.balance(self.client.address)


@pytest.fixture
def market(chain: Chain, deployer: LocalAccount) -> Market:
    """Only the market, deployed alone (cheaper than ``deploy_all``)."""
    client, deployed = DatasetMarketClient.deploy(chain, deployer)
    assert deployed.events == []
    accounts = chain.dev_accounts
    return Market(chain, client, accounts[1:3], accounts[3:6])


# ---------------------------------------------------------------------------- keys


def test_deploy_all_deploys_the_market(
    chain: Chain, deployment: Deployment, contracts: Contracts, deployer: LocalAccount
) -> None:
    market = contracts.market
    assert market.address == deployment.dataset_market
    assert market.address not in {
        deployment.coordinator,
        deployment.model_nft,
        deployment.enclave_registry,
        deployment.dev_verifier,
    }
    assert bytes(chain.w3.eth.get_code(market.address))  # type: ignore[arg-type]
    deployment.check(chain)
    assert market.receipt_count() == 0
    assert chain.balance(market.address) == 0
    # the deployer's client works end to end: list, buy from another account, withdraw
    market.list_version("d", 1, ENTRY, 7)
    key = dataset_key(deployer.address, "d")
    assert market.publisher_of(key) == deployer.address
    bought = market.as_account(chain.dev_accounts[1]).buy(key, 1, 7)
    assert (bought.receipt_id, bought.address) == (1, deployment.dataset_market)
    assert market.withdraw() == 7


def test_dataset_key_matches_the_contract(chain: Chain, market: Market) -> None:
    datasets = ["", DATASET, "données/🌍 v2", "nul\x00byte", "x" * 1000]
    publishers = [market.publisher.address, ZERO_ADDRESS, Account.create().address]
    keys = set()
    for publisher in publishers:
        for dataset_id in datasets:
            local = dataset_key(publisher, dataset_id)
            assert len(local) == 32
            on_chain = market.client.contract.functions.datasetKey(publisher, dataset_id).call()
            assert bytes(on_chain) == local, (publisher, dataset_id)
            keys.add(local)
    assert len(keys) == len(publishers) * len(datasets), "two (publisher, id) pairs share a key"
    # case does not matter to the local key: the address is checksummed first
    lower = market.publisher.address.lower()
    assert dataset_key(lower, DATASET) == dataset_key(market.publisher.address, DATASET)
    # and the key the contract lists under is the same one, for a unicode id too
    for dataset_id in ("données/🌍 v2", ""):
        listed: Listed = (
            market.as_(market.publisher).list_version(dataset_id, 0, ENTRY, 1).first(Listed)
        )
        assert listed.dataset_key == dataset_key(market.publisher.address, dataset_id)
        assert listed.dataset_id == dataset_id


@pytest.fixture(scope="module")
def embedded_market() -> DatasetMarketClient:
    """One market on one embedded EVM for the property test (it only reads)."""
    chain = connect("embedded")
    client, _ = DatasetMarketClient.deploy(chain, chain.dev_accounts[0])
    return client


@settings(max_examples=25, deadline=None)
@given(
    publisher=st.binary(min_size=20, max_size=20),
    dataset_id=st.text(max_size=80),
    lower=st.booleans(),
)
def test_dataset_key_matches_the_contract_for_any_id(
    embedded_market: DatasetMarketClient, publisher: bytes, dataset_id: str, lower: bool
) -> None:
    address = to_checksum_address(publisher)
    given_address = address.lower() if lower else address
    on_chain = embedded_market.contract.functions.datasetKey(address, dataset_id).call()
    assert dataset_key(given_address, dataset_id) == bytes(on_chain)


# ---------------------------------------------------------------------------- list


def test_list_emits_listed_and_pins_the_entry(chain: Chain, market: Market) -> None:
    publisher, key = market.publisher, market.key
    client = market.as_(publisher)
    assert market.client.publisher_of(key) == ZERO_ADDRESS
    assert market.client.listing(key, VERSION) == UNLISTED

    result = market.list_default()
    listed: Listed = result.first(Listed)
    assert result.events == [listed]
    assert (listed.address, listed.block_number, listed.tx_hash) == (
        market.client.address,
        result.block_number,
        result.tx_hash,
    )
    assert (
        listed.dataset_key,
        listed.publisher,
        listed.dataset_id,
        listed.version,
        listed.entry_hash,
        listed.price,
    ) == (key, publisher.address, DATASET, VERSION, ENTRY, PRICE)
    assert market.client.publisher_of(key) == publisher.address
    assert market.client.listing(key, VERSION) == Listing(ENTRY, PRICE, True)
    assert market.client.listing(key, VERSION + 1) == UNLISTED
    assert market.client.listing(dataset_key(publisher.address, "other"), VERSION) == UNLISTED

    # re-pricing repeats the pinned hash
    repriced: Listed = client.list_version(DATASET, VERSION, ENTRY, 3 * PRICE).first(Listed)
    assert (repriced.dataset_key, repriced.entry_hash, repriced.price) == (key, ENTRY, 3 * PRICE)
    assert market.client.listing(key, VERSION) == Listing(ENTRY, 3 * PRICE, True)

    # another hash for the same version is refused, with both hashes named
    args = expect_revert(
        "EntryHashPinned", lambda: client.list_version(DATASET, VERSION, OTHER_ENTRY, PRICE)
    )
    assert args == {"pinned": ENTRY, "given": OTHER_ENTRY}
    # a price of 0 or an empty hash is refused whether or not the version is listed
    for version in (VERSION, VERSION + 1):
        assert (
            expect_revert("ZeroPrice", lambda v=version: client.list_version(DATASET, v, ENTRY, 0))
            == {}
        )
        assert (
            expect_revert(
                "EmptyEntryHash",
                lambda v=version: client.list_version(DATASET, v, ZERO_HASH, PRICE),
            )
            == {}
        )
    assert market.client.listing(key, VERSION) == Listing(ENTRY, 3 * PRICE, True)
    assert market.client.listing(key, VERSION + 1) == UNLISTED

    # another version pins its own hash; versions 0 and 2**64 - 1 are versions like any
    for version in (VERSION + 1, 0, UINT64_MAX):
        other: Listed = client.list_version(DATASET, version, OTHER_ENTRY, 5).first(Listed)
        assert (other.version, other.entry_hash, other.price) == (version, OTHER_ENTRY, 5)
        assert market.client.listing(key, version) == Listing(OTHER_ENTRY, 5, True)
    assert market.client.listing(key, VERSION) == Listing(ENTRY, 3 * PRICE, True)
    args = expect_revert(
        "EntryHashPinned", lambda: client.list_version(DATASET, UINT64_MAX, ENTRY, 5)
    )
    assert args == {"pinned": OTHER_ENTRY, "given": ENTRY}


def test_another_publisher_lists_the_same_id_under_its_own_key(
    chain: Chain, market: Market
) -> None:
    first, second = market.publishers
    buyer = market.buyers[0]
    market.list_default()
    key_first, key_second = market.key, dataset_key(second.address, DATASET)
    assert key_first != key_second

    # the same id and version with another hash and price: not pinned, it is another key
    result = market.as_(second).list_version(DATASET, VERSION, OTHER_ENTRY, 2 * PRICE)
    listed: Listed = result.first(Listed)
    assert (listed.dataset_key, listed.publisher, listed.entry_hash, listed.price) == (
        key_second,
        second.address,
        OTHER_ENTRY,
        2 * PRICE,
    )
    assert market.client.publisher_of(key_first) == first.address
    assert market.client.publisher_of(key_second) == second.address
    assert market.client.listing(key_first, VERSION) == Listing(ENTRY, PRICE, True)
    assert market.client.listing(key_second, VERSION) == Listing(OTHER_ENTRY, 2 * PRICE, True)

    # the second publisher's delist reaches only its own listing
    delisted: Delisted = market.as_(second).delist(DATASET, VERSION).first(Delisted)
    assert delisted.dataset_key == key_second
    assert market.client.listing(key_first, VERSION) == Listing(ENTRY, PRICE, True)
    args = expect_revert("NotListed", lambda: market.as_(second).delist(DATASET, VERSION))
    assert args == {"datasetKey": key_second, "version": VERSION}

    # buying the first publisher's key pays the first publisher
    market.as_(buyer).buy(key_first, VERSION, PRICE)
    assert market.client.proceeds(first.address) == PRICE
    assert market.client.proceeds(second.address) == 0
    args = expect_revert("NothingToWithdraw", lambda: market.as_(second).withdraw())
    assert args == {"account": second.address}


# --------------------------------------------------------------------------- delist


def test_delist_keeps_receipts_and_the_pin(chain: Chain, market: Market) -> None:
    publisher, key = market.publisher, market.key
    client = market.as_(publisher)
    early, late = market.buyers[:2]

    args = expect_revert("NotListed", lambda: client.delist(DATASET, VERSION))
    assert args == {"datasetKey": key, "version": VERSION}

    market.list_default()
    assert market.as_(early).buy(key, VERSION, PRICE).receipt_id == 1
    result = client.delist(DATASET, VERSION)
    delisted: Delisted = result.first(Delisted)
    assert result.events == [delisted]
    assert (delisted.address, delisted.dataset_key, delisted.version) == (
        market.client.address,
        key,
        VERSION,
    )
    assert market.client.listing(key, VERSION) == Listing(ENTRY, PRICE, False)
    assert market.client.publisher_of(key) == publisher.address
    args = expect_revert("NotListed", lambda: client.delist(DATASET, VERSION))
    assert args == {"datasetKey": key, "version": VERSION}

    # off sale: nobody buys, the earlier buyer's receipt stands
    for buyer in (late, early):
        args = expect_revert("NotListed", lambda b=buyer: market.as_(b).buy(key, VERSION, PRICE))
        assert args == {"datasetKey": key, "version": VERSION}
    assert market.client.receipt_of(key, VERSION, early.address) == 1
    assert market.client.receipt_of(key, VERSION, late.address) == 0
    assert market.client.receipt_count() == 1
    assert market.client.proceeds(publisher.address) == PRICE

    # the pin survives delisting; the same hash re-lists, at a new price
    args = expect_revert(
        "EntryHashPinned", lambda: client.list_version(DATASET, VERSION, OTHER_ENTRY, PRICE)
    )
    assert args == {"pinned": ENTRY, "given": OTHER_ENTRY}
    relisted: Listed = client.list_version(DATASET, VERSION, ENTRY, 2 * PRICE).first(Listed)
    assert (relisted.entry_hash, relisted.price) == (ENTRY, 2 * PRICE)
    assert market.client.listing(key, VERSION) == Listing(ENTRY, 2 * PRICE, True)
    bought = market.as_(late).buy(key, VERSION, 2 * PRICE)
    assert (bought.receipt_id, bought.price, bought.entry_hash) == (2, 2 * PRICE, ENTRY)
    args = expect_revert("AlreadyPurchased", lambda: market.as_(early).buy(key, VERSION, 2 * PRICE))
    assert args == {"buyer": early.address, "version": VERSION, "receiptId": 1}
    assert market.client.proceeds(publisher.address) == 3 * PRICE


# ------------------------------------------------------------------------------ buy


def test_buy_takes_exactly_the_price(chain: Chain, market: Market) -> None:
    key, buyer = market.key, market.buyers[0]
    client = market.as_(buyer)
    args = expect_revert("NotListed", lambda: client.buy(key, VERSION, PRICE))
    assert args == {"datasetKey": key, "version": VERSION}

    market.list_default()
    for sent in (PRICE - 1, PRICE + 1, 0, 2 * PRICE):
        args = expect_revert("WrongPayment", lambda s=sent: client.buy(key, VERSION, s))
        assert args == {"sent": sent, "price": PRICE}
    args = expect_revert("NotListed", lambda: client.buy(key, VERSION + 1, PRICE))
    assert args == {"datasetKey": key, "version": VERSION + 1}
    assert market.client.receipt_of(key, VERSION, buyer.address) == 0
    assert market.client.receipt_count() == 0
    assert market.client.proceeds(market.publisher.address) == 0
    assert market.balance() == 0

    # after a re-price the old price is wrong
    market.list_default(price=PRICE + 5)
    args = expect_revert("WrongPayment", lambda: client.buy(key, VERSION, PRICE))
    assert args == {"sent": PRICE, "price": PRICE + 5}
    assert client.buy(key, VERSION, PRICE + 5).price == PRICE + 5
    assert market.balance() == PRICE + 5


def test_buy_records_numbered_receipts_and_proceeds(chain: Chain, market: Market) -> None:
    (first, second), buyers = market.publishers, market.buyers
    key_a, key_b = market.key, dataset_key(second.address, "b")
    market.list_default()
    market.as_(first).list_version(DATASET, VERSION + 1, OTHER_ENTRY, 2 * PRICE)
    market.as_(second).list_version("b", 0, OTHER_ENTRY, 5 * PRICE)
    assert market.client.receipt_count() == 0

    # buy's return value is the next receipt id
    preview = market.client.contract.functions.buy(key_a, VERSION).call(
        {"from": buyers[0].address, "value": PRICE}
    )
    assert preview == 1

    purchases = [
        (buyers[0], key_a, VERSION, ENTRY, PRICE),
        (buyers[1], key_a, VERSION, ENTRY, PRICE),
        (buyers[0], key_a, VERSION + 1, OTHER_ENTRY, 2 * PRICE),
        (buyers[2], key_b, 0, OTHER_ENTRY, 5 * PRICE),
        (buyers[0], key_b, 0, OTHER_ENTRY, 5 * PRICE),
    ]
    for receipt_id, (buyer, key, version, entry, price) in enumerate(purchases, start=1):
        before = chain.balance(buyer.address)
        held = market.balance()
        client = market.as_(buyer)
        event = client.buy(key, version, price)
        tx = last_tx(client)
        assert tx.events == [event]
        assert (
            event.address,
            event.receipt_id,
            event.dataset_key,
            event.buyer,
            event.version,
            event.entry_hash,
            event.price,
        ) == (market.client.address, receipt_id, key, buyer.address, version, entry, price)
        assert before - chain.balance(buyer.address) == price + gas_cost(chain, tx.tx_hash)
        assert market.balance() == held + price
        assert market.client.receipt_of(key, version, buyer.address) == receipt_id
        assert market.client.receipt_count() == receipt_id

    # a second purchase is refused, naming the first receipt; nothing moves
    for buyer, key, version, receipt_id, price in (
        (buyers[0], key_a, VERSION, 1, PRICE),
        (buyers[0], key_b, 0, 5, 5 * PRICE),
    ):
        args = expect_revert(
            "AlreadyPurchased",
            lambda b=buyer, k=key, v=version, p=price: market.as_(b).buy(k, v, p),
        )
        assert args == {"buyer": buyer.address, "version": version, "receiptId": receipt_id}
    assert market.client.receipt_count() == len(purchases)

    # receipts are per buyer, version and key
    receipts = {
        (buyer.address, key, version): receipt_id
        for receipt_id, (buyer, key, version, _, _) in enumerate(purchases, start=1)
    }
    for buyer in [*buyers, first, second]:
        for key, version in ((key_a, VERSION), (key_a, VERSION + 1), (key_b, 0), (key_b, 1)):
            got = market.client.receipt_of(key, version, buyer.address)
            assert got == receipts.get((buyer.address, key, version), 0)

    # proceeds accrue to each key's publisher and are all the market holds
    assert market.client.proceeds(first.address) == 4 * PRICE
    assert market.client.proceeds(second.address) == 10 * PRICE
    assert all(market.client.proceeds(b.address) == 0 for b in buyers)
    assert market.balance() == 14 * PRICE


# ------------------------------------------------------------------------- withdraw


def test_withdraw_pays_the_publisher_its_proceeds(chain: Chain, market: Market) -> None:
    (first, second), buyers = market.publishers, market.buyers
    key_second = dataset_key(second.address, DATASET)
    for account in (first, buyers[0]):
        args = expect_revert("NothingToWithdraw", lambda a=account: market.as_(a).withdraw())
        assert args == {"account": account.address}

    market.list_default()
    market.as_(second).list_version(DATASET, VERSION, ENTRY, 7)
    for buyer in buyers[:2]:
        market.as_(buyer).buy(market.key, VERSION, PRICE)
    market.as_(buyers[2]).buy(key_second, VERSION, 7)
    assert market.balance() == 2 * PRICE + 7

    client = market.as_(first)
    preview = market.client.contract.functions.withdraw().call({"from": first.address})
    assert preview == 2 * PRICE
    before = chain.balance(first.address)
    assert client.withdraw() == 2 * PRICE
    tx = last_tx(client)
    withdrawn: Withdrawn = tx.first(Withdrawn)
    assert tx.events == [withdrawn]
    assert (withdrawn.address, withdrawn.publisher, withdrawn.amount) == (
        market.client.address,
        first.address,
        2 * PRICE,
    )
    assert chain.balance(first.address) - before == 2 * PRICE - gas_cost(chain, tx.tx_hash)
    assert market.client.proceeds(first.address) == 0
    assert market.client.proceeds(second.address) == 7
    assert market.balance() == 7
    args = expect_revert("NothingToWithdraw", lambda: client.withdraw())
    assert args == {"account": first.address}

    # receipts outlive the withdrawal; new sales accrue again
    assert market.client.receipt_of(market.key, VERSION, buyers[0].address) == 1
    market.as_(buyers[2]).buy(market.key, VERSION, PRICE)
    assert market.client.proceeds(first.address) == PRICE
    assert client.withdraw() == PRICE
    assert market.as_(second).withdraw() == 7
    assert market.balance() == 0


# -------------------------------------------------------------------- state machine

N_PUBLISHERS = 2
N_BUYERS = 3
DATASET_IDS = ("weather", "génome/🧬")
"""Both publishers use both ids: four keys."""
VERSIONS = (0, UINT64_MAX)
ENTRIES = tuple(keccak(text=f"cotune market stateful entry {i}") for i in range(3))
SLOT = st.tuples(
    st.integers(0, N_PUBLISHERS - 1),
    st.integers(0, len(DATASET_IDS) - 1),
    st.integers(0, len(VERSIONS) - 1),
)
"""(publisher, dataset id, version), as indexes."""
PRICES = st.one_of(st.integers(1, 1000), st.just(10**18))
MACHINE_SETTINGS = settings(
    max_examples=10,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SHRINK_TIMEOUT_S = 600
"""A passing run takes about ten seconds; a failing one shrinks for minutes (each step is
a transaction), longer than the default test timeout of 300 s."""


def mostly(common: str, *rare: str, odds: int = 2) -> st.SearchStrategy[str]:
    """``common`` about ``odds`` times as often as all ``rare`` values together."""
    items = [common]
    for value in rare:
        items += [value] + [common] * odds
    return st.sampled_from(items)


@dataclass
class ListingModel:
    entry: bytes
    price: int
    active: bool = True


Slot = tuple[int, int, int]


@dataclass
class MarketModel:
    listings: dict[Slot, ListingModel] = field(default_factory=dict)
    receipts: dict[tuple[Slot, int], int] = field(default_factory=dict)
    """(slot, buyer) -> receipt id."""
    proceeds: list[int] = field(default_factory=lambda: [0] * N_PUBLISHERS)
    receipt_count: int = 0
    paid: int = 0
    """Wei paid for all purchases."""


class MarketStage(SnapshotStage):
    """A market deployed once on an embedded EVM, under one snapshot."""

    def __init__(self) -> None:
        chain = connect("embedded")
        client, _ = DatasetMarketClient.deploy(chain, chain.dev_accounts[0])
        self.address = client.address
        super().__init__(chain)


class MarketMachine(RuleBasedStateMachine):
    """Random listings, purchases and withdrawals, each predicted by the model first."""

    def __init__(self, chain: Chain, address: str) -> None:
        super().__init__()
        self.chain = chain
        accounts = chain.dev_accounts
        self.publishers = accounts[1 : 1 + N_PUBLISHERS]
        self.buyers = accounts[1 + N_PUBLISHERS : 1 + N_PUBLISHERS + N_BUYERS]
        self.reader = DatasetMarketClient(chain, address)
        self.clients = {
            a.address: DatasetMarketClient(chain, address, a) for a in self.publishers + self.buyers
        }
        self.model = MarketModel()
        self.withdrawn = 0

    def _key(self, slot: Slot) -> bytes:
        publisher, dataset, _ = slot
        return dataset_key(self.publishers[publisher].address, DATASET_IDS[dataset])

    def _check_slot(self, slot: Slot, buyer: int | None = None) -> None:
        """The chain's listing (and ``buyer``'s receipt) for ``slot`` match the model."""
        key, version = self._key(slot), VERSIONS[slot[2]]
        model = self.model.listings.get(slot)
        expected = UNLISTED if model is None else Listing(model.entry, model.price, model.active)
        assert self.reader.listing(key, version) == expected
        if buyer is not None:
            got = self.reader.receipt_of(key, version, self.buyers[buyer].address)
            assert got == self.model.receipts.get((slot, buyer), 0)

    @initialize(
        opening=st.lists(st.tuples(SLOT, PRICES), min_size=1, max_size=3, unique_by=lambda t: t[0]),
        buyers=st.lists(st.integers(0, N_BUYERS - 1), max_size=3),
    )
    def open_market(self, opening: list[tuple[Slot, int]], buyers: list[int]) -> None:
        """From an untouched market, list a few versions and sell the first to some buyers.

        Rules pick slots at random; this opening makes sure that most examples get as far
        as purchases, repeat purchases and withdrawals. Every call is checked like a rule.
        """
        assert self.chain.balance(self.reader.address) == 0
        assert self.reader.receipt_count() == 0
        for slot, price in opening:
            self._list(slot, ENTRIES[sum(slot) % len(ENTRIES)], price)
        for buyer in buyers:
            self._buy(opening[0][0], buyer, "exact")

    def _slot(self, data: st.DataObject, pool: list[Slot], odds: int) -> Slot:
        """A slot from ``pool`` ``odds`` times as often as any slot (when ``pool`` has any)."""
        if pool and data.draw(st.integers(0, odds), label="any slot") < odds:
            return data.draw(st.sampled_from(pool), label="slot")
        return data.draw(SLOT, label="slot")

    def _active(self) -> list[Slot]:
        return sorted(slot for slot, listing in self.model.listings.items() if listing.active)

    @rule(
        data=st.data(),
        entry=mostly("pinned", "other", "empty"),
        fresh=st.integers(0, len(ENTRIES) - 1),
        price=mostly("ok", "zero", odds=4).flatmap(lambda k: st.just(0) if k == "zero" else PRICES),
    )
    def list_version(self, data: st.DataObject, entry: str, fresh: int, price: int) -> None:
        """List or re-price a version (or fail to: no price, no hash, another hash)."""
        slot = self._slot(data, sorted(self.model.listings), odds=1)
        current = self.model.listings.get(slot)
        pinned = current.entry if current is not None else ENTRIES[fresh]
        if entry == "pinned":
            entry_hash = pinned
        elif entry == "other":
            entry_hash = next(e for e in ENTRIES if e != pinned)
        else:
            entry_hash = ZERO_HASH
        self._list(slot, entry_hash, price)

    def _list(self, slot: Slot, entry_hash: bytes, price: int) -> None:
        publisher, dataset, version = slot
        current = self.model.listings.get(slot)
        client = self.clients[self.publishers[publisher].address]

        def send() -> TxResult:
            return client.list_version(DATASET_IDS[dataset], VERSIONS[version], entry_hash, price)

        if price == 0:
            event("list: ZeroPrice")
            assert expect_revert("ZeroPrice", send) == {}
        elif entry_hash == ZERO_HASH:
            event("list: EmptyEntryHash")
            assert expect_revert("EmptyEntryHash", send) == {}
        elif current is not None and entry_hash != current.entry:
            event("list: EntryHashPinned")
            args = expect_revert("EntryHashPinned", send)
            assert args == {"pinned": current.entry, "given": entry_hash}
        else:
            event("list: ok" if current is None else "list: again")
            listed: Listed = send().first(Listed)
            assert (listed.dataset_key, listed.publisher, listed.dataset_id) == (
                self._key(slot),
                self.publishers[publisher].address,
                DATASET_IDS[dataset],
            )
            assert (listed.version, listed.entry_hash, listed.price) == (
                VERSIONS[version],
                entry_hash,
                price,
            )
            self.model.listings[slot] = ListingModel(entry_hash, price)
            assert self.reader.publisher_of(self._key(slot)) == self.publishers[publisher].address
        self._check_slot(slot)

    @rule(data=st.data())
    def delist(self, data: st.DataObject) -> None:
        """Take a version off sale (or fail to: it is not on sale)."""
        slot = self._slot(data, self._active(), odds=3)
        publisher, dataset, version = slot
        current = self.model.listings.get(slot)
        client = self.clients[self.publishers[publisher].address]

        def send() -> TxResult:
            return client.delist(DATASET_IDS[dataset], VERSIONS[version])

        if current is None or not current.active:
            event("delist: NotListed")
            args = expect_revert("NotListed", send)
            assert args == {"datasetKey": self._key(slot), "version": VERSIONS[version]}
        else:
            event("delist: ok")
            delisted: Delisted = send().first(Delisted)
            assert (delisted.dataset_key, delisted.version) == (self._key(slot), VERSIONS[version])
            current.active = False
        self._check_slot(slot)

    @rule(
        data=st.data(),
        buyer=st.integers(0, N_BUYERS - 1),
        payment=mostly("exact", "less", "more", odds=3),
    )
    def buy(self, data: st.DataObject, buyer: int, payment: str) -> None:
        """Buy a version (or fail to: not on sale, wrong payment, bought before)."""
        self._buy(self._slot(data, self._active(), odds=3), buyer, payment)

    def _buy(self, slot: Slot, buyer: int, payment: str) -> None:
        publisher, _, version = slot
        key = self._key(slot)
        current = self.model.listings.get(slot)
        price = current.price if current is not None else 1
        sent = {"exact": price, "less": price - 1, "more": price + 1}[payment]
        client = self.clients[self.buyers[buyer].address]
        existing = self.model.receipts.get((slot, buyer))

        def send() -> Purchased:
            return client.buy(key, VERSIONS[version], sent)

        if current is None or not current.active:
            event("buy: NotListed")
            args = expect_revert("NotListed", send)
            assert args == {"datasetKey": key, "version": VERSIONS[version]}
        elif sent != price:
            event("buy: WrongPayment")
            assert expect_revert("WrongPayment", send) == {"sent": sent, "price": price}
        elif existing is not None:
            event("buy: AlreadyPurchased")
            args = expect_revert("AlreadyPurchased", send)
            assert args == {
                "buyer": self.buyers[buyer].address,
                "version": VERSIONS[version],
                "receiptId": existing,
            }
        else:
            event("buy: ok")
            bought = send()
            self.model.receipt_count += 1
            assert (bought.receipt_id, bought.dataset_key, bought.buyer) == (
                self.model.receipt_count,
                key,
                self.buyers[buyer].address,
            )
            assert (bought.version, bought.entry_hash, bought.price) == (
                VERSIONS[version],
                current.entry,
                price,
            )
            self.model.receipts[(slot, buyer)] = self.model.receipt_count
            self.model.proceeds[publisher] += price
            self.model.paid += price
        self._check_slot(slot, buyer)

    @rule(who=mostly("earner", "publisher 0", "publisher 1", "buyer"))
    def withdraw(self, who: str) -> None:
        """A publisher (or a buyer, who never has proceeds) withdraws.

        The ``earner`` is the publisher with the most proceeds.
        """
        proceeds = self.model.proceeds
        if who == "buyer":
            account, owed, index = self.buyers[0], 0, -1
        else:
            index = proceeds.index(max(proceeds)) if who == "earner" else int(who[-1])
            account, owed = self.publishers[index], proceeds[index]
        client = self.clients[account.address]
        event("withdraw: NothingToWithdraw" if owed == 0 else "withdraw: ok")
        if owed == 0:
            assert expect_revert("NothingToWithdraw", client.withdraw) == {
                "account": account.address
            }
            return
        before = self.chain.balance(account.address)
        assert client.withdraw() == owed
        tx = last_tx(client)
        withdrawn: Withdrawn = tx.first(Withdrawn)
        assert (withdrawn.publisher, withdrawn.amount) == (account.address, owed)
        assert self.chain.balance(account.address) - before == owed - gas_cost(
            self.chain, tx.tx_hash
        )
        proceeds[index] = 0
        self.withdrawn += owed

    @invariant()
    def market_holds_exactly_the_unwithdrawn_proceeds(self) -> None:
        balance = self.chain.balance(self.reader.address)
        assert balance == sum(self.model.proceeds)
        for publisher, owed in zip(self.publishers, self.model.proceeds, strict=True):
            assert self.reader.proceeds(publisher.address) == owed
        assert balance == self.model.paid - self.withdrawn, "wei in minus wei out differs"

    @invariant()
    def receipts_are_counted(self) -> None:
        assert self.reader.receipt_count() == self.model.receipt_count
        ids = sorted(self.model.receipts.values())
        assert ids == list(range(1, self.model.receipt_count + 1))

    def teardown(self) -> None:
        """Every listing, receipt and publisher on chain matches the model."""
        for publisher in range(N_PUBLISHERS):
            for dataset in range(len(DATASET_IDS)):
                key = self._key((publisher, dataset, 0))
                listed = any(s[:2] == (publisher, dataset) for s in self.model.listings)
                expected = self.publishers[publisher].address if listed else ZERO_ADDRESS
                assert self.reader.publisher_of(key) == expected
                for version in range(len(VERSIONS)):
                    slot = (publisher, dataset, version)
                    self._check_slot(slot)
                    for buyer in range(N_BUYERS):
                        got = self.reader.receipt_of(
                            key, VERSIONS[version], self.buyers[buyer].address
                        )
                        assert got == self.model.receipts.get((slot, buyer), 0)


@pytest.fixture(scope="module")
def market_stage() -> MarketStage:
    return MarketStage()


@pytest.mark.slow
@pytest.mark.timeout(SHRINK_TIMEOUT_S)
def test_market_state_machine_embedded(market_stage: MarketStage) -> None:
    in_fresh_thread(
        lambda: run_state_machine_as_test(
            lambda: MarketMachine(market_stage.fresh_chain(), market_stage.address),
            settings=MACHINE_SETTINGS,
        )
    )
