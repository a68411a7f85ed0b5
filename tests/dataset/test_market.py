"""Buying dataset versions over real HTTP against the DatasetMarket on the embedded EVM.

The server's sales desk, and the buyer's flow: verify, pay once, redeem a claim, download.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cotune.chain import Chain, DatasetMarketClient, connect, dataset_key
from cotune.common.serving import serve_in_background
from cotune.dataset.bundle import init_bundle, update_bundle
from cotune.dataset.client import DownloadRefusedError, download_version
from cotune.dataset.market import (
    PurchaseClaim,
    PurchaseError,
    SalesDesk,
    buy_version,
    claim_domain,
)
from cotune.dataset.server import create_dataset_app, publish_version
from cotune.dataset.tokens import TokenStore
from cotune.dataset.versions import VERSION_LOG_NAME, SignedVersion, VersionLog
from cotune.training.data import write_jsonl

PRICE = 10**15


@dataclass
class Shop:
    chain: Chain
    market: DatasetMarketClient
    publisher: LocalAccount
    buyers: list[LocalAccount]
    log: VersionLog
    versions: list[SignedVersion]
    url: str
    tokens: TokenStore

    def key(self) -> bytes:
        return dataset_key(self.publisher.address, "clinic-notes")

    def balance(self, account: LocalAccount) -> int:
        return int(self.chain.w3.eth.get_balance(account.address))


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    chain = connect("embedded")
    publisher, *buyers = chain.dev_accounts[:4]
    market, _ = DatasetMarketClient.deploy(chain, publisher)
    bundle_dir, root = tmp_path / "bundle", tmp_path / "serve"
    log = VersionLog.open(bundle_dir / VERSION_LOG_NAME)
    versions = []
    for version in (1, 2):
        source = tmp_path / f"v{version}.jsonl"
        write_jsonl(source, [{"text": f"v{version} note {i}"} for i in range(50)])
        bundle = (
            init_bundle(
                bundle_dir,
                source,
                dataset_id="clinic-notes",
                name="Clinic notes",
                created_by=publisher.address,
            )
            if version == 1
            else update_bundle(bundle_dir, source)
        )
        versions.append(log.append(bundle, publisher))
        publish_version(root, bundle_dir)
    tokens = TokenStore(root / "tokens.json")
    app = create_dataset_app(
        root, tokens, SalesDesk(DatasetMarketClient(chain, market.address), tokens)
    )
    running = serve_in_background(app)
    try:
        yield Shop(
            chain,
            market,
            publisher,
            buyers,
            log,
            versions,
            f"http://127.0.0.1:{running.port}",
            tokens,
        )
    finally:
        running.stop()


def _list(shop: Shop, version: int, price: int = PRICE, entry: SignedVersion | None = None) -> None:
    signed = entry or shop.versions[version - 1]
    shop.market.list_version("clinic-notes", version, shop.log.entry_hash(signed), price)


def test_buy_pays_once_and_the_token_downloads_only_that_scope(shop: Shop, tmp_path: Path) -> None:
    _list(shop, 1)
    buyer = shop.buyers[0]
    before = shop.balance(buyer)
    purchase = buy_version(
        shop.url, 1, shop.market, buyer, expected_publisher=shop.publisher.address
    )
    assert purchase.paid and purchase.price == PRICE and purchase.receipt_id == 1
    assert purchase.entry == shop.versions[0]
    assert before - shop.balance(buyer) >= PRICE
    assert shop.market.proceeds(shop.publisher.address) == PRICE
    out = download_version(shop.url, 1, purchase.token, tmp_path / "v1.jsonl", purchase.entry)
    assert out.read_bytes().count(b"\n") == 50
    with pytest.raises(DownloadRefusedError) as refused:
        download_version(shop.url, 2, purchase.token, tmp_path / "v2.jsonl", shop.versions[1])
    assert refused.value.status == 403

    again = buy_version(shop.url, 1, shop.market, buyer)
    assert not again.paid and again.receipt_id == 1 and again.token != purchase.token
    assert shop.market.proceeds(shop.publisher.address) == PRICE  # not charged twice
    labels = [r.label for r in shop.tokens.list()]
    assert len(labels) == 2 and all(
        label.startswith(f"purchase:{buyer.address}:v1:") for label in labels
    )


def test_a_receipt_stays_redeemable_after_delisting(shop: Shop, tmp_path: Path) -> None:
    _list(shop, 1)
    buyer = shop.buyers[2]
    first = buy_version(shop.url, 1, shop.market, buyer)
    shop.market.delist("clinic-notes", 1)
    again = buy_version(shop.url, 1, shop.market, buyer)
    assert not again.paid and again.receipt_id == first.receipt_id
    download_version(shop.url, 1, again.token, tmp_path / "v1.jsonl", again.entry)
    with pytest.raises(PurchaseError, match="not on sale"):
        buy_version(shop.url, 1, shop.market, shop.buyers[0])


def test_nothing_is_paid_when_the_listing_is_missing_wrong_or_too_dear(shop: Shop) -> None:
    buyer = shop.buyers[1]
    before = shop.balance(buyer)
    with pytest.raises(PurchaseError, match="not on sale"):
        buy_version(shop.url, 1, shop.market, buyer)
    _list(shop, 1, entry=shop.versions[1])  # v1 listed pinning v2's entry
    with pytest.raises(PurchaseError, match="pins entry 0x"):
        buy_version(shop.url, 1, shop.market, buyer)
    _list(shop, 2)
    with pytest.raises(PurchaseError, match="above --max-price"):
        buy_version(shop.url, 2, shop.market, buyer, max_price=PRICE - 1)
    with pytest.raises(PurchaseError, match="not 3"):
        buy_version(shop.url, 3, shop.market, buyer)
    assert shop.balance(buyer) == before
    assert shop.market.receipt_count() == 0


def test_market_info_lists_prices(shop: Shop) -> None:
    _list(shop, 2, price=7)
    info = httpx.get(f"{shop.url}/market").json()
    assert info == {
        "chain_id": shop.chain.chain_id,
        "market": shop.market.address,
        "dataset_id": "clinic-notes",
        "publisher": shop.publisher.address,
        "dataset_key": "0x" + shop.key().hex(),
        "prices": {"2": 7},
    }


def _post(shop: Shop, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{shop.url}/purchases", json=body)


def _claim(shop: Shop, signer: LocalAccount, **overrides: Any) -> dict[str, Any]:
    domain = claim_domain(shop.chain.chain_id, shop.market.address)
    fields: dict[str, Any] = {"dataset_id": "clinic-notes", "version": 1, "issued_at": None}
    fields.update(overrides)
    claim = PurchaseClaim.sign(
        signer, domain, fields["dataset_id"], fields["version"], fields["issued_at"]
    )
    return claim.to_dict()


def test_the_server_refuses_bad_claims(shop: Shop) -> None:
    _list(shop, 1)
    buyer, stranger = shop.buyers[0], shop.buyers[1]
    unpaid = _post(shop, _claim(shop, buyer))
    assert unpaid.status_code == 402 and "has not bought v1" in unpaid.json()["detail"]
    shop.market.as_account(buyer).buy(shop.key(), 1, PRICE)

    forged = _claim(shop, stranger)
    forged["buyer"] = buyer.address  # a stranger's signature claiming the buyer's receipt
    answer = _post(shop, forged)
    assert answer.status_code == 401 and f"not {buyer.address}" in answer.json()["detail"]

    stale = _post(shop, _claim(shop, buyer, issued_at=int(time.time()) - 3600))
    assert stale.status_code == 400 and "outside" in stale.json()["detail"]
    other = _post(shop, _claim(shop, buyer, dataset_id="other-data"))
    assert other.status_code == 400 and "sells 'clinic-notes'" in other.json()["detail"]
    missing = _post(shop, _claim(shop, buyer, version=9))
    assert missing.status_code == 404

    body = _claim(shop, buyer)
    first = _post(shop, body)
    assert first.status_code == 200 and first.json()["receipt_id"] == 1
    replay = _post(shop, body)
    assert replay.status_code == 409 and "already redeemed" in replay.json()["detail"]

    for broken, member in (
        ({**body, "version": "1"}, "version"),
        ({**body, "buyer": "nobody"}, "buyer"),
        ({**body, "signature": "zz"}, "signature"),
        ({k: v for k, v in body.items() if k != "issued_at"}, "members"),
    ):
        answer = _post(shop, broken)
        assert answer.status_code == 400 and member in answer.json()["detail"]
    garbled = {**body, "signature": "0x" + "00" * 65}
    assert _post(shop, garbled).status_code == 401


def test_a_server_that_does_not_sell(tmp_path: Path) -> None:
    root = tmp_path / "serve"
    root.mkdir()
    running = serve_in_background(create_dataset_app(root, TokenStore(root / "tokens.json")))
    try:
        url = f"http://127.0.0.1:{running.port}"
        assert httpx.get(f"{url}/market").status_code == 404
        assert httpx.post(f"{url}/purchases", json={}).status_code == 404
    finally:
        running.stop()


def test_claim_round_trip_and_domain_binding() -> None:
    account = Account.create()
    domain = claim_domain(1, "0x" + "11" * 20)
    claim = PurchaseClaim.sign(account, domain, "d", 3, 1000)
    assert PurchaseClaim.from_dict(claim.to_dict()) == claim
    assert claim.signer(domain) == account.address
    assert claim.signer(claim_domain(2, "0x" + "11" * 20)) != account.address
