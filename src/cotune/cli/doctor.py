"""``cotune doctor``: check that everything a session needs is reachable and sane.

Each check runs on its own and reports ok / warn / fail with what it saw, so one
broken piece does not hide the others; the command exits non-zero on any failure.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.table import Table

from cotune.aggregator.enclave import DEV_MODE_WARNING
from cotune.cli.keys import resolve_keystore
from cotune.cli.output import JsonOption, console, print_json
from cotune.cli.participant import ChainOption, DeploymentOption, StorageOption, open_storage
from cotune.common.home import cotune_home
from cotune.crypto.keystore import read_keystore_info

LOW_BALANCE = 10**16
"""Below 0.01 ether an account cannot pay for a few transactions."""


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | warn | fail
    detail: str


def _run(checks: list[Check], name: str, probe: Callable[[], tuple[str, str]]) -> None:
    try:
        status, detail = probe()
    except Exception as exc:  # a doctor reports every failure, whatever its type
        status, detail = "fail", f"{type(exc).__name__}: {exc}"
    checks.append(Check(name, status, detail))


def doctor(
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    key: str | None = typer.Option(
        None, "--key", envvar="COTUNE_KEY", help="Also check this keystore's account."
    ),
    enclave_id: int | None = typer.Option(
        None, "--enclave-id", help="Also check this enclave's registration and attestation."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check the chain, the contracts, your account, an enclave and the storage."""
    from cotune.aggregator.attestation import DevStatementVerifier, verify_enclave
    from cotune.chain.connection import Chain, connect
    from cotune.chain.deployment import Contracts, Deployment

    checks: list[Check] = []
    state: dict[str, object] = {}

    def chain_probe() -> tuple[str, str]:
        connected = connect(chain, retries=1)
        state["chain"] = connected
        return "ok", f"{chain}: chain id {connected.chain_id}, block {connected.block_number()}"

    _run(checks, "chain", chain_probe)
    connected = state.get("chain")
    record_path = deployment or cotune_home() / "devnet" / "deployment.json"

    def contracts_probe() -> tuple[str, str]:
        assert isinstance(connected, Chain)
        record = Deployment.load(record_path)
        record.check(connected)
        state["deployment"] = record
        return "ok", f"code of all five contracts present and as shipped ({record_path})"

    if isinstance(connected, Chain):
        _run(checks, "contracts", contracts_probe)
    record = state.get("deployment")

    if key is not None and isinstance(connected, Chain):

        def account_probe() -> tuple[str, str]:
            assert isinstance(connected, Chain)
            address = read_keystore_info(resolve_keystore(key, None)).public.address
            balance = connected.balance(address)
            latest = connected.w3.eth.get_transaction_count(address, "latest")  # type: ignore[arg-type]
            pending = connected.w3.eth.get_transaction_count(address, "pending")  # type: ignore[arg-type]
            detail = f"{address}: {balance / 1e18:.4f} ETH, nonce {latest}"
            if pending > latest:
                return "warn", f"{detail}, {pending - latest} pending transaction(s) (nonce gap)"
            if balance < LOW_BALANCE:
                return "warn", f"{detail}: too little to pay for gas"
            return "ok", detail

        _run(checks, "account", account_probe)

    if enclave_id is not None and isinstance(connected, Chain) and isinstance(record, Deployment):

        def enclave_probe() -> tuple[str, str]:
            assert isinstance(connected, Chain) and isinstance(record, Deployment)
            contracts = Contracts.at(connected, record)
            verifier = DevStatementVerifier(contracts.verifier)
            verified = verify_enclave(
                contracts.registry, {contracts.verifier.address: verifier}, enclave_id
            )
            detail = (
                f"enclave {enclave_id}: signer {verified.record.signer}, measurement "
                f"0x{verified.record.measurement.hex()}, attestation {verified.kind} valid"
            )
            return ("warn", f"{detail}; {DEV_MODE_WARNING}") if verified.warning else ("ok", detail)

        _run(checks, "enclave", enclave_probe)

    def storage_probe() -> tuple[str, str]:
        store = open_storage(storage)
        ref = store.put(io.BytesIO(b"cotune doctor probe\n"))
        store.verify(ref)
        return "ok", f"{storage or cotune_home() / 'storage'}: write and verified read work"

    _run(checks, "storage", storage_probe)
    ok = all(c.status != "fail" for c in checks)
    if as_json:
        print_json({"ok": ok, "checks": [c.__dict__ for c in checks]})
    else:
        table = Table(title="cotune doctor")
        for column in ("check", "status", "detail"):
            table.add_column(column)
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail)
        console.print(table)
    if not ok:
        raise typer.Exit(1)
