"""``cotune dataset``: turn a JSONL file into a versioned, signed dataset bundle.

A bundle directory holds ``manifest.json`` (canonical, so its hash is stable), the
training artifact, and ``versions.json``: every version signed by the publisher as
EIP-712 typed data, each naming the hash of the one before. ``verify`` walks the log
offline and checks the head's artifact byte for byte.

Serving: ``admit`` issues an owner's token for versions ``1..N``; a purchase
(``buy``, redeemed by ``serve --sell``) gets a token for exactly the version bought,
one live token per receipt. ``revoke`` takes a label or token hash, ``--buyer`` or
``--receipt``; a purchase the publisher revoked gets no new token. Everything written
that holds dataset bytes (``anonymize``, ``get``, ``buy``) is mode 0600.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from cotune.cli.output import JsonOption, console, fail, friendly_errors, print_json
from cotune.cli.participant import (
    ChainOption,
    DeploymentOption,
    KeyOption,
    load_identity,
    open_chain,
)
from cotune.cli.training_options import load_files
from cotune.common.atomic import write_bytes_atomic

if TYPE_CHECKING:  # the dataset stack loads only inside the commands
    from cotune.dataset.tokens import TokenStore
    from cotune.dataset.versions import SignedVersion, VersionLog

app = typer.Typer(
    help="Versioned, signed datasets: make them (init, anonymize, version, verify, status), "
    "serve them (publish, serve, admit, revoke), sell them (sell, withdraw) and get them "
    "(buy, get).",
    no_args_is_help=True,
)

BundleArgument = typer.Argument(..., help="The bundle directory.")
PublisherOption = typer.Option(None, "--publisher", help="Refuse a log not signed by this address.")


def _log_path(bundle: Path) -> Path:
    from cotune.dataset.versions import VERSION_LOG_NAME

    return bundle / VERSION_LOG_NAME


def _versions_table(log: VersionLog) -> Table:
    table = Table(title=f"{log.path}")
    for column in ("version", "manifest", "artifact sha256", "bytes", "time", "publisher"):
        table.add_column(column)
    for signed in log.entries:
        e = signed.entry
        table.add_row(
            str(e.version),
            "0x" + e.manifest_hash.hex()[:12] + "…",
            e.artifact_sha256.hex()[:12] + "…",
            str(e.artifact_size),
            str(e.timestamp),
            e.publisher,
        )
    return table


@app.command("init")
def init(
    bundle: Path = BundleArgument,
    source: Path = typer.Option(
        ..., "--from", exists=True, dir_okay=False, help="The training JSONL."
    ),
    dataset_id: str = typer.Option(..., "--id", help="Dataset id: a-z, 0-9, '.', '_', '-'."),
    name: str = typer.Option(..., "--name", help="Human-readable name."),
    description: str = typer.Option("", "--description", help="What the data is."),
    license_: str = typer.Option("", "--license", help="License of the data."),
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a bundle from a JSONL file and sign it as version 1 with --key."""
    from cotune.dataset.bundle import init_bundle
    from cotune.dataset.versions import VersionLog

    load_files([source], "no bundle was created")
    with friendly_errors():
        publisher = load_identity(key).account
        made = init_bundle(
            bundle,
            source,
            dataset_id=dataset_id,
            name=name,
            created_by=publisher.address,
            description=description,
            license=license_,
        )
        signed = VersionLog.open(_log_path(bundle)).append(made, publisher)
    _report(bundle, signed.entry.version, made.manifest_hash, as_json)


@app.command("version")
def version(
    bundle: Path = BundleArgument,
    source: Path = typer.Option(
        ..., "--from", exists=True, dir_okay=False, help="The new training JSONL."
    ),
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Replace the artifact with a new JSONL and sign it as the next version."""
    from cotune.dataset.bundle import update_bundle
    from cotune.dataset.versions import VersionLog

    load_files([source], "no version was added")
    with friendly_errors():
        publisher = load_identity(key).account
        log = VersionLog.load(_log_path(bundle))
        log.verify()  # never extend a broken chain, nor rewrite the artifact of one
        updated = update_bundle(bundle, source)
        signed = log.append(updated, publisher)
    _report(bundle, signed.entry.version, updated.manifest_hash, as_json)


def _report(bundle: Path, number: int, manifest_hash: bytes, as_json: bool) -> None:
    if as_json:
        print_json(
            {"bundle": str(bundle), "version": number, "manifest_hash": "0x" + manifest_hash.hex()}
        )
    else:
        console.print(f"{bundle}: signed version {number} (manifest 0x{manifest_hash.hex()})")


@app.command("verify")
def verify(
    bundle: Path = BundleArgument,
    publisher: str | None = typer.Option(
        None, "--publisher", help="Refuse a log not signed by this address."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Walk the version log v1 → head offline, then check the bundle against the head."""
    from cotune.dataset.bundle import load_bundle
    from cotune.dataset.versions import VersionLog, verify_bundle

    with friendly_errors():
        log = VersionLog.load(_log_path(bundle))
        head = log.verify(publisher)
        verify_bundle(head, load_bundle(bundle))
    if as_json:
        print_json(
            {
                "ok": True,
                "dataset_id": head.entry.dataset_id,
                "versions": len(log.entries),
                "publisher": head.entry.publisher,
                "head": [e.to_dict() for e in log.entries][-1],
            }
        )
    else:
        console.print(_versions_table(log))
        console.print(
            f"[green]ok[/]: {len(log.entries)} versions of {head.entry.dataset_id}, "
            f"all signed by {head.entry.publisher}; the bundle matches the head"
        )


@app.command("status")
def status(bundle: Path = BundleArgument, as_json: bool = JsonOption) -> None:
    """The bundle's manifest and its versions (nothing is verified: see `verify`)."""
    from cotune.dataset.bundle import read_manifest
    from cotune.dataset.versions import VersionLog

    with friendly_errors():
        manifest = read_manifest(bundle)
        log = VersionLog.load(_log_path(bundle))
    if as_json:
        print_json({"manifest": manifest.to_dict(), "versions": [e.to_dict() for e in log.entries]})
    else:
        console.print(f"{manifest.dataset_id}: {manifest.name} ({manifest.example_count} examples)")
        console.print(_versions_table(log))


@app.command("anonymize")
def anonymize(
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL to redact."),
    out: Path = typer.Argument(..., help="Where to write the redacted JSONL."),
    as_json: bool = JsonOption,
) -> None:
    """Replace personal data with typed placeholders (<EMAIL_1> stays the same person).

    Redacts e-mail addresses, phone numbers, IP addresses, card numbers (Luhn-checked),
    IBANs, national-ID-shaped numbers, API keys and secrets, home-directory paths and
    URLs carrying tokens, in every string of every line. Prints counts per type, never
    a raw value; the output is written atomically, mode 0600.
    """
    from cotune.dataset.redact import redact_jsonl

    with friendly_errors():
        redacted, report = redact_jsonl(source.read_bytes())
        write_bytes_atomic(out, redacted, mode=0o600)
    if as_json:
        print_json(report.to_dict())
    else:
        summary = report.to_dict()
        kinds = ", ".join(
            f"{kind} {count} ({summary['distinct'][kind]} distinct)"
            for kind, count in summary["counts"].items()
        )
        console.print(
            f"wrote {out}: {summary['total']} values redacted in {summary['lines_touched']} of "
            f"{summary['lines_total']} lines" + (f": {kinds}" if kinds else ""),
            highlight=False,
        )


RootOption = typer.Option(
    Path("dataset-server"), "--root", help="The server's directory (artifacts, log, tokens)."
)


def _tokens(root: Path) -> TokenStore:
    from cotune.dataset.tokens import TokenStore

    return TokenStore(root / "tokens.json")


@app.command("publish")
def publish(
    bundle: Path = BundleArgument, root: Path = RootOption, as_json: bool = JsonOption
) -> None:
    """Copy the bundle's head version and signed log into a server directory."""
    from cotune.dataset.server import publish_version

    with friendly_errors():
        head = publish_version(root, bundle)
    if as_json:
        print_json(head.to_dict())
    else:
        console.print(f"published {head.entry.dataset_id} v{head.entry.version} in {root}")


@app.command("serve")
def serve(
    root: Path = RootOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8790, "--port", help="Port to bind."),
    sell_: bool = typer.Option(
        False,
        "--sell",
        help="Also sell: mint tokens for purchases on the DatasetMarket of --chain/--deployment.",
    ),
    public_origins: list[str] | None = typer.Option(
        None,
        "--public-origin",
        help="With --sell: a URL buyers reach this server at (repeatable); claims signed for "
        "any other origin are refused. Default: http://HOST:PORT (and http://localhost:PORT "
        "on loopback); required with a wildcard --host.",
    ),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
) -> None:
    """Serve the published versions: the log is public, artifacts need a member token.

    Full (200) and range (206) downloads both carry the whole-file SHA-256 and an ETag,
    and If-Range is honoured, so `curl -C -` and `cotune dataset get` resume. With
    --sell, buyers who paid on chain redeem a claim signed for this server's origin for
    a token for exactly the version bought (`dataset buy`).
    """
    import uvicorn

    from cotune.dataset.server import create_dataset_app

    if public_origins and not sell_:
        fail("--public-origin names where buyers redeem claims: it needs --sell")
    sales = None
    with friendly_errors():
        tokens = _tokens(root)
        if sell_:
            from cotune.chain.clients.dataset_market import DatasetMarketClient
            from cotune.dataset.market import SalesDesk, default_origins

            origins = public_origins or default_origins(host, port)
            rpc, record = open_chain(chain, deployment)
            market = DatasetMarketClient(rpc, record.dataset_market)
            sales = SalesDesk(market, tokens, origins=origins)
    routes = "GET /versions, /versions/N/artifact" + (", /market, POST /purchases" if sales else "")
    console.print(f"serving {root} on http://{host}:{port} ({routes})")
    if sales is not None:
        console.print(f"redeeming claims for {', '.join(sorted(sales.origins))}")
    uvicorn.run(create_dataset_app(root, tokens, sales), host=host, port=port, log_level="warning")


@app.command("admit")
def admit(
    label: str = typer.Argument(..., help="Who the token is for (unique)."),
    max_version: int = typer.Option(..., "--max-version", min=1, help="Newest version allowed."),
    root: Path = RootOption,
    as_json: bool = JsonOption,
) -> None:
    """Issue a member token for versions 1..--max-version (shown once; only its hash is kept)."""
    from rich.markup import escape

    from cotune.dataset.tokens import TokenScope

    scope = TokenScope.up_to(max_version)
    with friendly_errors():
        token = _tokens(root).issue(label, scope)
    if as_json:
        print_json({"label": label, "scope": scope.to_dict(), "token": token})
    else:  # the label is printed as typed: markup in it must not lose the token
        console.print(f"token for {escape(label)} ({scope.describe()}), shown once:")
        console.print(token, highlight=False, soft_wrap=True)


@app.command("revoke")
def revoke(
    label: str | None = typer.Argument(None, help="Label (or token hash) to revoke."),
    buyer: str | None = typer.Option(
        None, "--buyer", help="Revoke every token bought by this address instead."
    ),
    receipt: int | None = typer.Option(
        None, "--receipt", min=1, help="Revoke the token of this purchase receipt instead."
    ),
    root: Path = RootOption,
    as_json: bool = JsonOption,
) -> None:
    """Revoke member tokens; a running server refuses them from the next request.

    Give one of a label (or token hash), --buyer or --receipt. A purchase whose token
    the publisher revoked gets no new token, whatever its buyer claims later.
    """
    from eth_utils.address import is_address
    from rich.markup import escape

    if sum(choice is not None for choice in (label, buyer, receipt)) != 1:
        fail("give exactly one of a label (or token hash), --buyer or --receipt")
    if buyer is not None and not is_address(buyer):
        fail(f"--buyer {escape(repr(buyer))} is not an address")
    with friendly_errors():
        tokens = _tokens(root)
        if buyer is not None:
            records = tokens.revoke_buyer(buyer)
        elif receipt is not None:
            records = tokens.revoke_receipt(receipt)
        else:
            assert label is not None
            records = tokens.revoke(label)
    if as_json:
        print_json({"revoked": [r.to_dict() for r in records]})
    else:
        console.print(f"revoked {escape(', '.join(r.label for r in records))}", highlight=False)


@app.command("get")
def get(
    url: str = typer.Argument(..., help="The dataset server's base URL."),
    version_number: int = typer.Argument(..., help="Version to download."),
    out: Path = typer.Argument(..., help="Where to write the verified artifact."),
    token: str = typer.Option(
        ...,
        "--token",
        envvar="COTUNE_DATASET_TOKEN",
        help="Member token.",
    ),
    publisher: str | None = PublisherOption,
    as_json: bool = JsonOption,
) -> None:
    """Download a version, resumably, and keep it only if it matches the signed log."""
    from cotune.dataset.client import fetch_version_log

    with friendly_errors():
        log = fetch_version_log(url, expected_publisher=publisher)
        expected = log.get(version_number)
        if expected is None:
            raise LookupError(f"{url} publishes versions {log.numbers}, not {version_number}")
        _download(url, expected, token, out, as_json)
    digest = expected.entry.artifact_sha256.hex()
    if as_json:
        print_json({"path": str(out), "version": version_number, "sha256": digest})
    else:
        console.print(f"{out}: version {version_number}, sha256 {digest} (verified)")


def _download(url: str, expected: SignedVersion, token: str, out: Path, as_json: bool) -> None:
    """Download ``expected``'s artifact with a progress bar (resuming, verifying)."""
    from cotune.cli.output import byte_progress
    from cotune.dataset.client import download_version

    with byte_progress("download", expected.entry.artifact_size, enabled=not as_json) as step:
        seen = [0]

        def on_progress(done: int, _total: int) -> None:
            step(done - seen[0])  # the bar counts increments; the client reports totals
            seen[0] = done

        download_version(url, expected.entry.version, token, out, expected, progress=on_progress)


@app.command("sell")
def sell(
    bundle: Path = BundleArgument,
    version_number: int = typer.Option(..., "--version", min=1, help="Version to list."),
    price: int = typer.Option(0, "--price", min=0, help="Price in wei (above 0 to list)."),
    stop: bool = typer.Option(False, "--stop", help="Stop selling the version instead."),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """List a version on the DatasetMarket at a price (or --stop selling it), as its publisher.

    The listing pins the version's signed entry hash: buyers pay for exactly those bytes.
    Re-run with another --price to re-price. Proceeds are withdrawn with `withdraw`.
    """
    from cotune.chain.clients.dataset_market import DatasetMarketClient
    from cotune.dataset.versions import VersionLog

    if not stop and price == 0:
        fail("give --price in wei (above 0), or --stop to stop selling")
    with friendly_errors():
        log = VersionLog.load(_log_path(bundle))
        log.verify()
        signed = log.get(version_number)
        if signed is None:
            raise LookupError(f"{bundle} has versions {log.numbers}, not {version_number}")
        identity = load_identity(key)
        if identity.address != signed.entry.publisher:
            fail(
                f"v{version_number} is published by {signed.entry.publisher}, "
                f"not by {identity.address}"
            )
        rpc, record = open_chain(chain, deployment)
        market = DatasetMarketClient(rpc, record.dataset_market, identity.account)
        dataset_id = signed.entry.dataset_id
        if stop:
            tx = market.delist(dataset_id, version_number)
        else:
            tx = market.list_version(dataset_id, version_number, log.entry_hash(signed), price)
    payload = {
        "dataset_id": dataset_id,
        "version": version_number,
        "entry_hash": "0x" + log.entry_hash(signed).hex(),
        "price": 0 if stop else price,
        "on_sale": not stop,
        "market": record.dataset_market,
        "tx": tx.tx_hash,
    }
    if as_json:
        print_json(payload)
    elif stop:
        console.print(f"{dataset_id} v{version_number} is no longer on sale")
    else:
        console.print(f"{dataset_id} v{version_number} is on sale for {price} wei")


@app.command("withdraw")
def withdraw(
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Withdraw the proceeds of your dataset sales to your address."""
    from cotune.chain.clients.dataset_market import DatasetMarketClient

    with friendly_errors():
        identity = load_identity(key)
        rpc, record = open_chain(chain, deployment)
        amount = DatasetMarketClient(rpc, record.dataset_market, identity.account).withdraw()
    if as_json:
        print_json({"address": identity.address, "amount": amount})
    else:
        console.print(f"withdrew {amount} wei to {identity.address}")


@app.command("buy")
def buy(
    url: str = typer.Argument(..., help="The dataset server's base URL."),
    version_number: int = typer.Argument(..., help="Version to buy."),
    out: Path = typer.Argument(..., help="Where to write the verified artifact."),
    max_price: int | None = typer.Option(
        None, "--max-price", min=0, help="Refuse to pay more than this many wei."
    ),
    publisher: str | None = PublisherOption,
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Pay for a version on the DatasetMarket, get a member token, download and verify it.

    Nothing is paid unless the server's log verifies and the on-chain listing pins the
    same signed entry. The token opens that version only. Buying again never pays twice:
    it redeems a new token against the receipt you already hold, and the old token stops
    working. The token is printed once; keep it for `get`.
    """
    from cotune.chain.clients.dataset_market import DatasetMarketClient
    from cotune.dataset.market import buy_version

    with friendly_errors():
        identity = load_identity(key)
        rpc, record = open_chain(chain, deployment)
        market = DatasetMarketClient(rpc, record.dataset_market)
        purchase = buy_version(
            url,
            version_number,
            market,
            identity.account,
            expected_publisher=publisher,
            max_price=max_price,
        )
        if not as_json:
            paid = f"paid {purchase.price} wei" if purchase.paid else "already paid"
            replaced = "; your earlier token stops working" if purchase.replaced else ""
            console.print(
                f"receipt {purchase.receipt_id} ({paid}); member token for v{version_number} "
                f"only{replaced}, shown once:"
            )
            console.print(purchase.token, highlight=False, soft_wrap=True)
        _download(url, purchase.entry, purchase.token, out, as_json)
    digest = purchase.entry.entry.artifact_sha256.hex()
    if as_json:
        print_json(
            {
                "path": str(out),
                "version": version_number,
                "sha256": digest,
                "receipt_id": purchase.receipt_id,
                "price": purchase.price,
                "paid": purchase.paid,
                "tx": purchase.tx_hash,
                "token": purchase.token,
                "replaced": purchase.replaced,
            }
        )
    else:
        console.print(f"{out}: version {version_number}, sha256 {digest} (verified)")
