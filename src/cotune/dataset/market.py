"""Selling dataset versions through the ``DatasetMarket`` contract.

The flow, buyer side (:func:`buy_version`):

1. fetch the server's signed version log and verify it offline;
2. read the listing of ``(publisher, dataset id, version)`` on chain and check that it
   pins the very entry the log signs (so the price buys exactly those bytes);
3. pay the listed price with ``DatasetMarket.buy`` (skipped when this address already
   holds a receipt: buying again never charges twice);
4. sign a :class:`PurchaseClaim` (EIP-712: "I, the paying address, ask *this server*
   for a token for version N of *this publisher's* dataset", dated, with a nonce) and
   ``POST /purchases`` it;
5. the server (:class:`SalesDesk`) checks the signature, the claim's age, that it names
   this server's origin and publisher, the receipt on chain and the listing's entry hash,
   then mints a member token scoped to exactly that version.

**Bound to one server.** A claim names the origin the buyer contacts
(``scheme://host:port``, see :func:`normalize_origin`) and the publisher whose log it
verified. A server redeems only claims for one of its public origins (``cotune dataset
serve --public-origin``; by default derived from the bind address, see
:func:`default_origins`) and its own publisher, so a mirror that relays a buyer's claim
gets 409, not a token.

**One live token per receipt.** A claim is redeemed once (its token's label names the
buyer, the version, the claim's time and its random nonce; a replay is 409). A fresh
claim against a receipt *replaces* that receipt's token: the old one stops working, so
a buyer who lost a token signs a new claim, and a buyer never holds two. Once the
publisher revokes a receipt's token (``cotune dataset revoke``) the receipt gets no
new token (403). See :meth:`~cotune.dataset.tokens.TokenStore.issue_for_receipt`.

The claim's domain is ``name="cotune Dataset Server"``, ``version="2"``, the market's
chain id and address, so a claim means nothing to any other market or chain (version
``"1"`` claims, which named no server, are not accepted).
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from eth_utils.exceptions import ValidationError as EthKeysValidationError

from cotune.chain.clients.dataset_market import dataset_key
from cotune.common import jsonsafe
from cotune.common.errors import CotuneError
from cotune.crypto.eip712 import (
    Eip712Domain,
    TypeFields,
    recover_typed_data_signer,
    sign_typed_data,
)
from cotune.crypto.errors import SignatureError
from cotune.dataset.client import MAX_ANSWER_BYTES, error_detail, fetch_version_log, send
from cotune.dataset.tokens import (
    DuplicateLabelError,
    ReceiptRevokedError,
    TokenError,
    TokenStore,
)
from cotune.dataset.versions import SignedVersion, VersionLog

if TYPE_CHECKING:
    from cotune.chain.clients.dataset_market import DatasetMarketClient

CLAIM_DOMAIN_NAME = "cotune Dataset Server"
CLAIM_DOMAIN_VERSION = "2"
CLAIM_MAX_AGE = 300
"""Seconds a purchase claim stays redeemable after it was signed (and how far ahead of the
server's clock it may be)."""
CLAIM_TYPES: dict[str, TypeFields] = {
    "PurchaseClaim": (
        ("datasetId", "string"),
        ("version", "uint64"),
        ("publisher", "address"),
        ("origin", "string"),
        ("buyer", "address"),
        ("issuedAt", "uint64"),
        ("nonce", "uint64"),
    )
}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")  # noqa: S104 - recognised, never bound


class PurchaseError(CotuneError):
    """A purchase cannot go ahead, or the server would not mint a token for it."""


class ClaimRejectedError(PurchaseError):
    """The server refused a purchase claim; ``status`` is the HTTP status it answered."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def normalize_origin(url: str) -> str:
    """The origin of ``url`` as a claim names it: ``scheme://host:port``, all explicit.

    The scheme and host are lower-cased, the default port is written out, an IPv6 host
    is bracketed, and any path, query or trailing slash is dropped:
    ``HTTP://Data.Example:80/v1/`` is ``http://data.example:80``. ``ValueError`` for
    anything but an ``http``/``https`` URL with a host (and no user name or password).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL with a valid port: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r} carries a user name or password")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{_DEFAULT_PORTS[scheme] if port is None else port}"


def default_origins(host: str, port: int) -> tuple[str, ...]:
    """The origins a server bound to ``host:port`` answers at, for ``serve --sell``.

    A loopback bind is reached as itself and as ``localhost``; any other address or
    name as itself, over plain ``http``. ``ValueError`` for a wildcard bind (``0.0.0.0``,
    ``::``): the buyers' URL cannot be guessed; give ``--public-origin``.
    """
    if host in _WILDCARD_HOSTS:
        raise ValueError(
            f"--host {host!r} listens on every address: give --public-origin with the URL "
            "buyers use (for example http://data.example.org:8790)"
        )
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    named = f"[{host}]" if ":" in host else host
    origins = [normalize_origin(f"http://{named}:{port}")]
    if loopback:
        origins.append(normalize_origin(f"http://localhost:{port}"))
    return tuple(dict.fromkeys(origins))


def claim_domain(chain_id: int, market: str) -> Eip712Domain:
    """The EIP-712 domain of purchase claims for the market at ``market`` on ``chain_id``."""
    return Eip712Domain(
        CLAIM_DOMAIN_NAME, CLAIM_DOMAIN_VERSION, chain_id, to_checksum_address(market)
    )


@dataclass(frozen=True)
class PurchaseClaim:
    """A buyer's signed request, to one server, for a token for one version it paid for."""

    dataset_id: str
    version: int
    publisher: str
    """Whose dataset (the address that signs the version log), checksummed."""
    origin: str
    """The server the claim is for, as :func:`normalize_origin` writes it."""
    buyer: str
    issued_at: int
    nonce: int
    signature: bytes

    def message(self) -> dict[str, Any]:
        """The EIP-712 ``PurchaseClaim`` message."""
        return {
            "datasetId": self.dataset_id,
            "version": self.version,
            "publisher": self.publisher,
            "origin": self.origin,
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
        *,
        publisher: str,
        origin: str,
        issued_at: int | None = None,
    ) -> PurchaseClaim:
        """A claim by ``account`` for ``version`` of ``publisher``'s dataset, to one server.

        ``origin`` is any URL of that server (it is normalised); the nonce is random and
        the claim dated now unless ``issued_at`` is given.
        """
        unsigned = cls(
            dataset_id,
            version,
            to_checksum_address(publisher),
            normalize_origin(origin),
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
            "publisher": self.publisher,
            "origin": self.origin,
            "buyer": self.buyer,
            "issued_at": self.issued_at,
            "nonce": self.nonce,
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PurchaseClaim:
        """Parse a claim body; ``ValueError`` names the member that is missing or wrong."""
        expected = {
            "dataset_id",
            "version",
            "publisher",
            "origin",
            "buyer",
            "issued_at",
            "nonce",
            "signature",
        }
        if set(raw) != expected:
            raise ValueError(f"a claim has exactly the members {sorted(expected)}")
        for name in ("version", "issued_at", "nonce"):
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
                raise ValueError(f"{name} must be an integer in [0, 2**64)")
        if not isinstance(raw["dataset_id"], str):
            raise ValueError("dataset_id must be a string")
        for name in ("publisher", "buyer"):
            if not isinstance(raw[name], str) or not is_address(raw[name]):
                raise ValueError(f"{name} must be an address")
        origin = raw["origin"]
        try:
            normal = isinstance(origin, str) and normalize_origin(origin) == origin
        except ValueError:
            normal = False
        if not normal:
            raise ValueError("origin must be a normalised origin, scheme://host:port")
        signature = raw["signature"]
        if not isinstance(signature, str) or not signature.startswith("0x"):
            raise ValueError("signature must be 0x-prefixed hex")
        try:
            signature_bytes = bytes.fromhex(signature[2:])
        except ValueError:
            raise ValueError("signature must be 0x-prefixed hex") from None
        return cls(
            raw["dataset_id"],
            raw["version"],
            to_checksum_address(raw["publisher"]),
            origin,
            to_checksum_address(raw["buyer"]),
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
    """The only version the token opens."""
    receipt_id: int
    replaced: int
    """How many earlier tokens of the same receipt stopped working (0 or 1)."""


class SalesDesk:
    """Server side: verifies purchase claims against the market and mints member tokens."""

    def __init__(
        self,
        market: DatasetMarketClient,
        tokens: TokenStore,
        *,
        origins: Iterable[str],
        clock: Callable[[], float] = time.time,
        max_age: int = CLAIM_MAX_AGE,
    ) -> None:
        """Sell on ``market``, minting into ``tokens``, to claims for one of ``origins``.

        ``origins`` are the URLs buyers reach this server at (normalised here; see
        :func:`default_origins`); ``ValueError`` when there is none or one is not a URL.
        """
        self.market = market
        self.tokens = tokens
        self.origins = frozenset(normalize_origin(origin) for origin in origins)
        if not self.origins:
            raise ValueError("a sales desk needs at least one public origin")
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
        if claim.publisher != head.entry.publisher:
            raise ClaimRejectedError(
                409,
                f"the claim is for {claim.publisher}'s dataset; this server sells "
                f"{head.entry.publisher}'s",
            )
        if claim.origin not in self.origins:
            raise ClaimRejectedError(
                409,
                f"the claim is bound to {claim.origin}, but this server answers at "
                f"{', '.join(sorted(self.origins))}: sign it for the server you contact "
                "(a relaying server cannot redeem it)",
            )
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
            token, replaced = self.tokens.issue_for_receipt(
                label, claim.version, claim.buyer, receipt
            )
        except DuplicateLabelError:
            raise ClaimRejectedError(
                409, "this claim was already redeemed: sign a new one"
            ) from None
        except ReceiptRevokedError:
            raise ClaimRejectedError(
                403,
                f"the publisher revoked the token of receipt {receipt}: "
                "this purchase gets no new token",
            ) from None
        except TokenError as exc:  # the journal is full or unreadable
            raise ClaimRejectedError(
                503, f"the server cannot issue a token now ({type(exc).__name__})"
            ) from None
        return IssuedToken(token, label, claim.version, receipt, len(replaced))


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
    """A member token for exactly ``entry``'s version."""
    receipt_id: int
    price: int
    paid: bool
    """False when an earlier receipt was reused and nothing was paid now."""
    tx_hash: str | None
    replaced: int
    """How many earlier tokens of this receipt the new one replaced (they stop working)."""


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

    ``buyer`` pays and signs the claim, bound to ``base_url``'s origin and the log's
    publisher. The token opens ``version`` only; it replaces any earlier token of the same
    receipt. ``PurchaseError`` before any payment when ``base_url`` is not an http(s) URL,
    the log does not verify, the version is not on sale, the listing pins another entry, or
    the price is above ``max_price``; ``ClaimRejectedError`` when the server refuses the
    claim (the receipt stays on chain: run again to redeem a new claim without paying).
    """
    url = base_url.rstrip("/")
    try:
        origin = normalize_origin(url)
    except ValueError as exc:
        raise PurchaseError(str(exc)) from None
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
    claim = PurchaseClaim.sign(
        buyer, domain, dataset_id, version, publisher=publisher, origin=origin
    )
    token, replaced = _post_claim(url, claim, client)
    return Purchase(signed, token, receipt, listing.price, tx_hash is not None, tx_hash, replaced)


def _post_claim(url: str, claim: PurchaseClaim, client: httpx.Client | None) -> tuple[str, int]:
    """The token the server mints for ``claim``, and how many tokens it replaced."""
    status, body = send(
        client, "POST", f"{url}/purchases", limit=MAX_ANSWER_BYTES, json=claim.to_dict()
    )
    if status != 200:
        detail = error_detail(body)
        if detail is None:
            detail = body.decode("utf-8", "replace")
        raise ClaimRejectedError(status, f"{url}/purchases: HTTP {status}: {detail}")
    try:
        answer = jsonsafe.loads(body)
    except (ValueError, RecursionError):
        answer = None
    if (
        not isinstance(answer, dict)
        or not isinstance(answer.get("token"), str)
        or not answer["token"]
    ):
        raise PurchaseError(f"{url}/purchases: the answer holds no token")
    replaced = answer.get("replaced")
    if isinstance(replaced, bool) or not isinstance(replaced, int):
        raise PurchaseError(f"{url}/purchases: the answer does not say what it replaced")
    return answer["token"], replaced


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
    "default_origins",
    "normalize_origin",
]
