"""``cotune devnet``: a local anvil chain with cotune's contracts, kept across restarts."""

from __future__ import annotations

from pathlib import Path

import typer

from cotune.chain.devnet import DEFAULT_PORT, Devnet, DevnetStatus
from cotune.cli.output import JsonOption, console, friendly_errors, print_json
from cotune.common.home import cotune_home

app = typer.Typer(
    help=(
        "A local development chain: anvil on 127.0.0.1 with cotune's contracts deployed. "
        "Its state is saved in the devnet directory, so it survives `down` and `up`. "
        "The funded accounts use anvil's public test keys: never use them on a real chain."
    ),
    no_args_is_help=True,
)

HomeOption = typer.Option(None, "--home", help="Devnet directory [default: $COTUNE_HOME/devnet].")


def _devnet(home: Path | None, port: int = DEFAULT_PORT) -> Devnet:
    return Devnet(home or cotune_home() / "devnet", port)


def _contracts(status: DevnetStatus) -> dict[str, str] | None:
    deployment = status.deployment
    if deployment is None:
        return None
    return {
        "coordinator": deployment.coordinator,
        "enclave_registry": deployment.enclave_registry,
        "dev_verifier": deployment.dev_verifier,
        "model_nft": deployment.model_nft,
        "dataset_market": deployment.dataset_market,
    }


def _status_dict(status: DevnetStatus) -> dict[str, object]:
    return {
        "running": status.running,
        "url": status.url,
        "pid": status.pid,
        "home": str(status.home),
        "block_number": status.block_number,
        "deployment": None if status.deployment is None else str(status.home / "deployment.json"),
        "contracts": _contracts(status),
    }


@app.command("up")
def up(
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Loopback port for JSON-RPC."),
    home: Path | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Start anvil (or reuse the running one), deploy the contracts once, list dev accounts."""
    devnet = _devnet(home, port)
    with friendly_errors():
        status, deployed_now = devnet.up()
        accounts = devnet.connect().dev_accounts
    listing = [{"address": a.address, "private_key": "0x" + a.key.hex()} for a in accounts]
    if as_json:
        print_json(_status_dict(status) | {"deployed_now": deployed_now, "accounts": listing})
        return
    console.print(f"devnet running at [bold]{status.url}[/] (chain id 31337, pid {status.pid})")
    verb = "deployed contracts" if deployed_now else "contracts already deployed"
    console.print(f"{verb}; record: {devnet.deployment_path}")
    console.print("funded dev accounts (anvil's PUBLIC test keys, devnet only):")
    for i, entry in enumerate(listing):
        console.print(
            f"  [{i}] {entry['address']}  {entry['private_key']}", highlight=False, soft_wrap=True
        )


@app.command("down")
def down(home: Path | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Stop anvil; its chain state is saved and restored by the next `up`."""
    with friendly_errors():
        stopped = _devnet(home).down()
    if as_json:
        print_json({"stopped": stopped})
    else:
        console.print("devnet stopped, state saved" if stopped else "no devnet was running")


@app.command("status")
def status(home: Path | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Whether the devnet runs, its block height and where its contracts are."""
    with friendly_errors():
        current = _devnet(home).status()
    if as_json:
        print_json(_status_dict(current))
        return
    if not current.running:
        console.print(f"no devnet running (directory {current.home})")
        return
    console.print(
        f"devnet running at {current.url}, pid {current.pid}, block {current.block_number}"
    )
    for name, address in (_contracts(current) or {}).items():
        console.print(f"  {name:17} {address}", highlight=False)
