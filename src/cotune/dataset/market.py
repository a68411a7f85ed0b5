"""Selling dataset versions through the ``DatasetMarket`` contract.

The flow, buyer side (:func:`buy_version`):

1. fetch the server's signed version log and verify it offline;
2. read the listing of ``(publisher, dataset id, version)`` on chain and check that it
   pins the very entry the log signs (so the price buys exactly those bytes);
3. pay the listed price with ``DatasetMarket.buy`` (skipped when this address already
   holds a receipt: buying again never charges twice);
4. sign a :class:`PurchaseClaim` (EIP-712: "I, the paying address, ask for a token for
   version N", with the time it was signed) and ``POST /purchases`` it;
5. the server (:class:`SalesDesk`) checks the signature, the claim's age, the receipt on
   chain and the listing's entry hash, then mints a member token scoped to that version.

Each claim is redeemed once: its token's label names the buyer, the version, the
claim's time and its random nonce, and the token store refuses a second token with the
same label, across restarts. A fresh claim (another ``buy``) mints a fresh token.

The claim's domain is ``name="cotune Dataset Server"``, ``version="1"``, the market's
chain id and address, so a claim means nothing to any other market or chain.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from eth_utils.exceptions import ValidationError as EthKeysValidationError

from cotune.chain.clients.dataset_market import dataset_key
from cotune.common.errors import CotuneError
from cotune.crypto.eip712 import (
    Eip712Domain,
    TypeFields,
    recover_typed_data_signer,
    sign_typed_data,
)
from cotune.crypto.errors import SignatureError
from cotune.dataset.client import fetch_version_log, send
from cotune.dataset.tokens import DuplicateLabelError, TokenStore
from cotune.dataset.versions import SignedVersion, VersionLog

if TYPE_CHECKING:
    from cotune.chain.clients.dataset_market import DatasetMarketClient

CLAIM_DOMAIN_NAME = "cotune Dataset Server"
CLAIM_DOMAIN_VERSION = "1"
CLAIM_MAX_AGE = 300
"""Seconds a purchase claim stays redeemable after it was signed (and how far ahead of the
server's clock it may be)."""
CLAIM_TYPES: dict[str, TypeFields] = {
    "PurchaseClaim": (
        ("datasetId", "string"),
        ("version", "uint64"),
        ("buyer", "address"),
        ("issuedAt", "uint64"),
        ("nonce", "uint64"),
    )
}


class PurchaseError(CotuneError):
    """A purchase cannot go ahead, or the server would not mint a token for it."""


class ClaimRejectedError(PurchaseError):
    """The server refused a purchase claim; ``status`` is the HTTP status it answered."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def claim_domain(chain_id: int, market: str) -> Eip712Domain:
    """The EIP-712 domain of purchase claims for the market at ``market`` on ``chain_id``."""
    return Eip712Domain(
        CLAIM_DOMAIN_NAME, CLAIM_DOMAIN_VERSION, chain_id, to_checksum_address(market)
    )


@dataclass(frozen=True)
class PurchaseClaim:
    """A buyer's signed request for a token for one version it paid for."""

    dataset_id: str
    version: int
    buyer: str
    issued_at: int
    nonce: int
    signature: bytes

    def message(self) -> dict[str, Any]:
        """The EIP-712 ``PurchaseClaim`` message."""
        return {
            "datasetId": self.dataset_id,
            "version": self.version,
            "buyer": self.buyer,
            "issuedAt": self.issued_at,
            "nonce": self.nonce,
        }

    @classmethod
    def sign(
        cls,
        account: LocalAccount,
        domain: Eip712Domain,
        dataset_id: str,
        version: int,
        issued_at: int | None = None,
    ) -> PurchaseClaim:
        """A claim by ``account`` for ``version`` with a random nonce, dated now by default."""
        unsigned = cls(
            dataset_id,
            version,
            to_checksum_address(account.address),
            int(time.time()) if issued_at is None else issued_at,
            secrets.randbits(64),
            b"",
        )
        signature = sign_typed_data(
            account, domain, CLAIM_TYPES, "PurchaseClaim", unsigned.message()
        )
        return replace(unsigned, signature=signature)

    def signer(self, domain: Eip712Domain) -> str:
        """Who signed the claim; ``SignatureError`` when the signature is malformed."""
        try:
            return recover_typed_data_signer(
                domain, CLAIM_TYPES, "PurchaseClaim", self.message(), self.signature
            )
        except (EthKeysValidationError, ValueError) as exc:
            raise SignatureError(f"malformed claim signature ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of ``POST /purchases``."""
        return {
            "dataset_id": self.dataset_id,
            "version": self.version,
            "buyer": self.buyer,
            "issued_at": self.issued_at,
            "nonce": self.nonce,
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PurchaseClaim:
        """Parse a claim body; ``ValueError`` names the member that is missing or wrong."""
        expected = {"dataset_id", "version", "buyer", "issued_at", "nonce", "signature"}
        if set(raw) != expected:
            raise ValueError(f"a claim has exactly the members {sorted(expected)}")
        for name in ("version", "issued_at", "nonce"):
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
                raise ValueError(f"{name} must be an integer in [0, 2**64)")
        if not isinstance(raw["dataset_id"], str):
            raise ValueError("dataset_id must be a string")
        buyer, signature = raw["buyer"], raw["signature"]
        if not isinstance(buyer, str) or not is_address(buyer):
            raise ValueError("buyer must be an address")
        if not isinstance(signature, str) or not signature.startswith("0x"):
            raise ValueError("signature must be 0x-prefixed hex")
        try:
            signature_bytes = bytes.fromhex(signature[2:])
        except ValueError:
            raise ValueError("signature must be 0x-prefixed hex") from None
        return cls(
            raw["dataset_id"],
            raw["version"],
            to_checksum_address(buyer),
            raw["issued_at"],
            raw["nonce"],
            signature_bytes,
        )


@dataclass(frozen=True)
class IssuedToken:
    """What the server answers a redeemed claim with."""

    token: str
    label: str
    version: int
    receipt_id: int


class SalesDesk:
    """Server side: verifies purchase claims against the market and mints member tokens."""

    def __init__(
        self,
        market: DatasetMarketClient,
        tokens: TokenStore,
        *,
        clock: Callable[[], float] = time.time,
        max_age: int = CLAIM_MAX_AGE,
    ) -> None:
        self.market = market
        self.tokens = tokens
        self.domain = claim_domain(market.chain.chain_id, market.address)
        self._clock = clock
        self._max_age = max_age
        self._chain_lock = threading.Lock()  # one chain read at a time from the server's threads

    def info(self, log: VersionLog) -> dict[str, Any]:
        """What a buyer needs to pay: chain, market, dataset key and each version's price."""
        head = _head(log)
        key = dataset_key(head.entry.publisher, head.entry.dataset_id)
        with self._chain_lock:
            listings = {
                s.entry.version: self.market.listing(key, s.entry.version) for s in log.entries
            }
        return {
            "chain_id": self.market.chain.chain_id,
            "market": self.market.address,
            "dataset_id": head.entry.dataset_id,
            "publisher": head.entry.publisher,
            "dataset_key": "0x" + key.hex(),
            "prices": {
                str(v): listing.price for v, listing in sorted(listings.items()) if listing.active
            },
        }

    def redeem(self, claim: PurchaseClaim, log: VersionLog) -> IssuedToken:
        """Mint a token for a valid, fresh, paid-for claim, or raise :class:`ClaimRejectedError`."""
        head = _head(log)
        if claim.dataset_id != head.entry.dataset_id:
            raise ClaimRejectedError(
                400, f"this server sells {head.entry.dataset_id!r}, not {claim.dataset_id!r}"
            )
        signed = log.get(claim.version)
        if signed is None:
            raise ClaimRejectedError(404, f"v{claim.version} is not published")
        now = int(self._clock())
        if not now - self._max_age <= claim.issued_at <= now + self._max_age:
            raise ClaimRejectedError(
                400, f"the claim was signed at {claim.issued_at}, outside ±{self._max_age} s of now"
            )
        try:
            signer = claim.signer(self.domain)
        except SignatureError as exc:
            raise ClaimRejectedError(401, str(exc)) from None
        if signer != claim.buyer:
            raise ClaimRejectedError(401, f"the claim is signed by {signer}, not {claim.buyer}")
        key = dataset_key(head.entry.publisher, head.entry.dataset_id)
        with self._chain_lock:
            receipt = self.market.receipt_of(key, claim.version, claim.buyer)
            listing = self.market.listing(key, claim.version)
        if receipt == 0:
            raise ClaimRejectedError(402, f"{claim.buyer} has not bought v{claim.version}")
        if listing.entry_hash != log.entry_hash(signed):
            raise ClaimRejectedError(
                409, f"the market's listing of v{claim.version} pins another entry than this log"
            )
        label = f"purchase:{claim.buyer}:v{claim.version}:{claim.issued_at}:{claim.nonce:016x}"
        try:
            token = self.tokens.issue(label, claim.version)
        except DuplicateLabelError:
            raise ClaimRejectedError(
                409, "this claim was already redeemed: sign a new one"
            ) from None
        return IssuedToken(token, label, claim.version, receipt)


def _head(log: VersionLog) -> SignedVersion:
    head = log.head
    if head is None:
        raise ClaimRejectedError(404, "nothing is published")
    return head


@dataclass(frozen=True)
class Purchase:
    """The outcome of :func:`buy_version`."""

    entry: SignedVersion
    token: str
    receipt_id: int
    price: int
    paid: bool
    """False when an earlier receipt was reused and nothing was paid now."""
    tx_hash: str | None


def buy_version(
    base_url: str,
    version: int,
    market: DatasetMarketClient,
    buyer: LocalAccount,
    *,
    expected_publisher: str | None = None,
    max_price: int | None = None,
    client: httpx.Client | None = None,
) -> Purchase:
    """Pay for ``version`` on ``market`` (once) and redeem a token from the server at ``base_url``.

    ``buyer`` pays and signs the claim. ``PurchaseError`` before any payment when the log does
    not verify, the version is not on sale, the listing pins another entry, or the price is
    above ``max_price``; ``ClaimRejectedError`` when the server refuses the claim (the
    receipt stays on chain: run again to redeem a new claim without paying again).
    """
    url = base_url.rstrip("/")
    log = fetch_version_log(url, expected_publisher=expected_publisher, client=client)
    signed = log.get(version)
    if signed is None:
        raise PurchaseError(f"{url} publishes versions {log.numbers}, not {version}")
    publisher, dataset_id = signed.entry.publisher, signed.entry.dataset_id
    key = dataset_key(publisher, dataset_id)
    market = market.as_account(buyer)
    listing = market.listing(key, version)
    receipt = market.receipt_of(key, version, buyer.address)
    if not listing.active and receipt == 0:  # a receipt stays redeemable after delisting
        raise PurchaseError(f"v{version} of {dataset_id} by {publisher} is not on sale")
    if listing.entry_hash != log.entry_hash(signed):
        raise PurchaseError(
            f"the market's listing of v{version} pins entry 0x{listing.entry_hash.hex()}, "
            f"but the signed log's v{version} is 0x{log.entry_hash(signed).hex()}: not buying"
        )
    tx_hash: str | None = None
    if receipt == 0:
        if max_price is not None and listing.price > max_price:
            raise PurchaseError(
                f"v{version} costs {listing.price} wei, above --max-price {max_price} wei"
            )
        event = market.buy(key, version, listing.price)
        receipt, tx_hash = event.receipt_id, event.tx_hash
    domain = claim_domain(market.chain.chain_id, market.address)
    claim = PurchaseClaim.sign(buyer, domain, dataset_id, version)
    issued = _post_claim(url, claim, client)
    return Purchase(signed, issued, receipt, listing.price, tx_hash is not None, tx_hash)


def _post_claim(url: str, claim: PurchaseClaim, client: httpx.Client | None) -> str:
    response = send(client, "POST", f"{url}/purchases", json=claim.to_dict())
    if response.status_code != 200:
        try:
            detail = str(response.json().get("detail", response.text))
        except ValueError:
            detail = response.text
        raise ClaimRejectedError(
            response.status_code, f"{url}/purchases: HTTP {response.status_code}: {detail}"
        )
    token = response.json().get("token")
    if not isinstance(token, str) or not token:
        raise PurchaseError(f"{url}/purchases: the answer holds no token")
    return token


__all__ = [
    "CLAIM_MAX_AGE",
    "ClaimRejectedError",
    "IssuedToken",
    "Purchase",
    "PurchaseClaim",
    "PurchaseError",
    "SalesDesk",
    "buy_version",
    "claim_domain",
]
