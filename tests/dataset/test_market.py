"""Buying dataset versions over real HTTP against the DatasetMarket on the embedded EVM.

The server's sales desk, and the buyer's flow: verify, pay once, redeem a claim, download.
A purchase opens exactly the version bought; a receipt has one live token; a claim is
bound to the server's origin and the publisher, so a relaying mirror gets nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request, Response

from cotune.chain import Chain, DatasetMarketClient, connect, dataset_key
from cotune.chain.devnet import free_port
from cotune.chain.errors import ChainError
from cotune.common.serving import serve_in_background
from cotune.dataset.bundle import init_bundle, update_bundle
from cotune.dataset.client import DownloadRefusedError, download_version
from cotune.dataset.market import (
    ClaimRejectedError,
    PurchaseClaim,
    PurchaseError,
    SalesDesk,
    buy_version,
    claim_domain,
    default_origins,
    normalize_origin,
)
from cotune.dataset.server import MAX_CLAIM_BYTES, create_dataset_app, publish_version
from cotune.dataset.tokens import RevokedBy, TokenStore
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
    port = free_port()
    desk = SalesDesk(
        DatasetMarketClient(chain, market.address),
        tokens,
        origins=default_origins("127.0.0.1", port),
    )
    running = serve_in_background(create_dataset_app(root, tokens, desk), port=port)
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


def test_buy_pays_once_and_the_token_opens_only_that_version(shop: Shop, tmp_path: Path) -> None:
    _list(shop, 1)
    _list(shop, 2)
    buyer = shop.buyers[0]
    before = shop.balance(buyer)
    purchase = buy_version(
        shop.url, 2, shop.market, buyer, expected_publisher=shop.publisher.address
    )
    assert purchase.paid and purchase.price == PRICE and purchase.receipt_id == 1
    assert purchase.entry == shop.versions[1] and purchase.replaced == 0
    assert before - shop.balance(buyer) >= PRICE
    assert shop.market.proceeds(shop.publisher.address) == PRICE
    out = download_version(shop.url, 2, purchase.token, tmp_path / "v2.jsonl", purchase.entry)
    assert out.read_bytes().count(b"\n") == 50
    # Buying v2 does not unlock v1: the token covers exactly the version bought.
    with pytest.raises(DownloadRefusedError, match="covers v2 only, not v1") as refused:
        download_version(shop.url, 1, purchase.token, tmp_path / "v1.jsonl", shop.versions[0])
    assert refused.value.status == 403
    answer = httpx.get(
        f"{shop.url}/versions/1/artifact", headers={"Authorization": f"Bearer {purchase.token}"}
    )
    assert answer.status_code == 403
    assert answer.json()["detail"] == "this token covers v2 only, not v1"
    (record,) = shop.tokens.list()
    assert (record.scope.kind, record.scope.version) == ("exact", 2)
    assert (record.buyer, record.receipt_id) == (buyer.address, 1)


def test_buying_again_replaces_the_token_instead_of_adding_one(shop: Shop, tmp_path: Path) -> None:
    _list(shop, 1)
    buyer = shop.buyers[0]
    first = buy_version(shop.url, 1, shop.market, buyer)
    again = buy_version(shop.url, 1, shop.market, buyer)
    assert not again.paid and again.receipt_id == first.receipt_id
    assert again.token != first.token and again.replaced == 1
    assert shop.market.proceeds(shop.publisher.address) == PRICE  # not charged twice
    with pytest.raises(DownloadRefusedError, match="replaced by a newer token"):
        download_version(shop.url, 1, first.token, tmp_path / "old.jsonl", shop.versions[0])
    download_version(shop.url, 1, again.token, tmp_path / "new.jsonl", again.entry)
    records = shop.tokens.list()
    assert len(records) == 2 and all(
        r.label.startswith(f"purchase:{buyer.address}:v1:") for r in records
    )
    assert [r.revoked for r in records] == [True, False]  # one live token per receipt
    assert records[0].revocation is not None
    assert records[0].revocation.reason is RevokedBy.REPLACED


def test_a_receipt_the_publisher_revoked_gets_no_new_token(shop: Shop) -> None:
    _list(shop, 1)
    alice, bob = shop.buyers[0], shop.buyers[1]
    first = buy_version(shop.url, 1, shop.market, alice)
    buy_version(shop.url, 1, shop.market, bob)
    TokenStore(shop.tokens.path).revoke_receipt(first.receipt_id)  # the CLI, elsewhere
    with pytest.raises(ClaimRejectedError, match="revoked the token of receipt 1") as refused:
        buy_version(shop.url, 1, shop.market, alice)
    assert refused.value.status == 403
    TokenStore(shop.tokens.path).revoke_buyer(bob.address)
    with pytest.raises(ClaimRejectedError) as also:
        buy_version(shop.url, 1, shop.market, bob)
    assert also.value.status == 403
    assert shop.market.receipt_count() == 2  # nobody paid twice


def _relay(upstream: str) -> FastAPI:
    """A mirror that forwards every request to ``upstream`` and answers what it answered."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request) -> Response:
        async with httpx.AsyncClient() as http:
            answer = await http.request(
                request.method,
                f"{upstream}/{path}",
                content=await request.body(),
                headers={"content-type": request.headers.get("content-type", "")},
            )
        return Response(answer.content, answer.status_code, media_type="application/json")

    return app


def test_a_relaying_mirror_cannot_redeem_the_buyers_claim(shop: Shop) -> None:
    _list(shop, 1)
    buyer = shop.buyers[2]
    mirror = serve_in_background(_relay(shop.url))
    try:
        url = f"http://127.0.0.1:{mirror.port}"
        with pytest.raises(ClaimRejectedError, match=re.escape(f"bound to {url},")) as caught:
            buy_version(url, 1, shop.market, buyer)  # the buyer pays, believing the mirror
        assert caught.value.status == 409
        assert "a relaying server cannot redeem it" in str(caught.value)
    finally:
        mirror.stop()
    assert shop.tokens.list() == []  # the mirror got no token
    again = buy_version(shop.url, 1, shop.market, buyer)  # the real server: no new payment
    assert not again.paid


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
    fields: dict[str, Any] = {
        "dataset_id": "clinic-notes",
        "version": 1,
        "issued_at": None,
        "publisher": shop.publisher.address,
        "origin": shop.url,
    }
    fields.update(overrides)
    claim = PurchaseClaim.sign(
        signer,
        domain,
        fields["dataset_id"],
        fields["version"],
        publisher=fields["publisher"],
        origin=fields["origin"],
        issued_at=fields["issued_at"],
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
    elsewhere = _post(shop, _claim(shop, buyer, origin="https://mirror.example"))
    assert elsewhere.status_code == 409
    assert "bound to https://mirror.example:443" in elsewhere.json()["detail"]
    foreign = _post(shop, _claim(shop, buyer, publisher=stranger.address))
    assert foreign.status_code == 409
    assert f"for {stranger.address}'s dataset" in foreign.json()["detail"]

    body = _claim(shop, buyer)
    first = _post(shop, body)
    assert first.status_code == 200 and first.json()["receipt_id"] == 1
    replay = _post(shop, body)
    assert replay.status_code == 409 and "already redeemed" in replay.json()["detail"]

    for broken, member in (
        ({**body, "version": "1"}, "version"),
        ({**body, "buyer": "nobody"}, "buyer"),
        ({**body, "publisher": 7}, "publisher"),
        ({**body, "origin": "http://127.0.0.1:1/path"}, "origin"),
        ({**body, "origin": ["x"]}, "origin"),
        ({**body, "signature": "zz"}, "signature"),
        ({k: v for k, v in body.items() if k != "issued_at"}, "members"),
    ):
        answer = _post(shop, broken)
        assert answer.status_code == 400 and member in answer.json()["detail"]
    garbled = {**body, "signature": "0x" + "00" * 65}
    assert _post(shop, garbled).status_code == 401


def test_a_claim_body_is_read_up_to_its_cap_and_must_be_an_object(shop: Shop) -> None:
    url = f"{shop.url}/purchases"
    json_type = {"content-type": "application/json"}
    for oversized in (b" " * (MAX_CLAIM_BYTES + 1), b"[" * (10 * MAX_CLAIM_BYTES)):
        answer = httpx.post(url, content=oversized, headers=json_type)
        assert answer.status_code == 413
        assert f"at most {MAX_CLAIM_BYTES} bytes" in answer.json()["detail"]
    for body, message in (
        (b"[" * (MAX_CLAIM_BYTES - 1), "not JSON"),
        (b"[]", "not a JSON object"),
        (b"7", "not a JSON object"),
        (b"", "not JSON"),
    ):
        answer = httpx.post(url, content=body, headers=json_type)
        assert answer.status_code == 400 and message in answer.json()["detail"]
    assert _post(shop, _claim(shop, shop.buyers[0])).status_code == 402  # still serving


def test_a_chain_failure_is_503_and_keeps_the_rpc_url_to_itself(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _list(shop, 1)
    buyer = shop.buyers[0]
    shop.market.as_account(buyer).buy(shop.key(), 1, PRICE)
    claim = _claim(shop, buyer)

    def unreachable(*_args: object) -> None:
        raise ChainError("cannot reach https://rpc.example/v3/SECRET-API-KEY: timed out")

    monkeypatch.setattr(DatasetMarketClient, "listing", unreachable)
    monkeypatch.setattr(DatasetMarketClient, "receipt_of", unreachable)
    for answer in (httpx.get(f"{shop.url}/market"), _post(shop, claim)):
        assert answer.status_code == 503
        assert answer.json()["detail"] == "cannot read the market now (ChainError)"
        assert "SECRET" not in answer.text


class _RefusingPurchases(httpx.BaseTransport):
    """Real HTTP, except that ``POST /purchases`` gets ``status`` with ``body``."""

    def __init__(self, status: int, body: bytes) -> None:
        self._real = httpx.HTTPTransport()
        self._answer = (status, body)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            status, body = self._answer
            return httpx.Response(status, content=body)
        return self._real.handle_request(request)

    def close(self) -> None:
        self._real.close()


@pytest.mark.parametrize(
    ("body", "detail"),
    [(b'["busy"]', '["busy"]'), (b'{"detail": "busy"}', "busy"), (b"<html>", "<html>")],
)
def test_an_error_answer_of_any_shape_is_a_clean_refusal(
    shop: Shop, body: bytes, detail: str
) -> None:
    _list(shop, 1)
    with (
        httpx.Client(transport=_RefusingPurchases(503, body)) as http,
        pytest.raises(ClaimRejectedError) as refused,
    ):
        buy_version(shop.url, 1, shop.market, shop.buyers[0], client=http)
    assert refused.value.status == 503
    assert str(refused.value).endswith(f"HTTP 503: {detail}")


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


def test_claim_round_trip_and_binding() -> None:
    account = Account.create()
    publisher = Account.create().address
    domain = claim_domain(1, "0x" + "11" * 20)
    claim = PurchaseClaim.sign(
        account, domain, "d", 3, publisher=publisher, origin="HTTP://Data.Example/", issued_at=1000
    )
    assert claim.origin == "http://data.example:80" and claim.publisher == publisher
    assert PurchaseClaim.from_dict(claim.to_dict()) == claim
    assert claim.signer(domain) == account.address
    assert claim.signer(claim_domain(2, "0x" + "11" * 20)) != account.address
    for changed in (
        replace(claim, origin="http://mirror.example:80"),
        replace(claim, publisher=account.address),
    ):  # the signature covers the server and the publisher
        assert changed.signer(domain) != account.address
    old_style = {k: v for k, v in claim.to_dict().items() if k not in ("origin", "publisher")}
    with pytest.raises(ValueError, match="exactly the members"):
        PurchaseClaim.from_dict(old_style)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8790", "http://127.0.0.1:8790"),
        ("http://127.0.0.1:8790/", "http://127.0.0.1:8790"),
        ("HTTPS://Data.Example.org/shop/v1?x=1", "https://data.example.org:443"),
        ("http://data.example.org", "http://data.example.org:80"),
        ("http://[::1]:8790/", "http://[::1]:8790"),
        ("  http://h:1  ", "http://h:1"),
    ],
)
def test_normalize_origin(url: str, origin: str) -> None:
    assert normalize_origin(url) == origin
    assert normalize_origin(origin) == origin


@pytest.mark.parametrize(
    "url", ["ftp://h", "h:80", "http://", "http://h:99999", "http://u:p@h:1", "", "http://h:x"]
)
def test_normalize_origin_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        normalize_origin(url)


def test_default_origins_from_the_bind_address() -> None:
    assert default_origins("127.0.0.1", 8790) == ("http://127.0.0.1:8790", "http://localhost:8790")
    assert default_origins("localhost", 1) == ("http://localhost:1",)
    assert default_origins("::1", 2) == ("http://[::1]:2", "http://localhost:2")
    assert default_origins("10.0.0.5", 3) == ("http://10.0.0.5:3",)
    assert default_origins("data.example", 4) == ("http://data.example:4",)
    for wildcard in ("0.0.0.0", "::", ""):  # noqa: S104 - never bound
        with pytest.raises(ValueError, match="--public-origin"):
            default_origins(wildcard, 8790)


def test_a_sales_desk_needs_an_origin() -> None:
    chain = connect("embedded")
    market, _ = DatasetMarketClient.deploy(chain, chain.dev_accounts[0])
    with pytest.raises(ValueError, match="at least one public origin"):
        SalesDesk(market, TokenStore(Path("/nonexistent/tokens.json")), origins=[])
