"""Options every networked command shares: chain, deployment, storage and the key to act as."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cotune.cli.keys import resolve_keystore
from cotune.cli.output import fail
from cotune.cli.passphrase import DEFAULT_PASSPHRASE_ENV, read_passphrase
from cotune.common.home import cotune_home

if TYPE_CHECKING:  # web3 and the SDK load only when a command talks to a chain
    from eth_account.signers.local import LocalAccount

    from cotune.chain.connection import Chain
    from cotune.chain.deployment import Deployment
    from cotune.crypto.identity import Identity
    from cotune.sdk.client import Client
    from cotune.storage.base import BlobStore

ChainOption = typer.Option(
    "http://127.0.0.1:8545",
    "--chain",
    envvar="COTUNE_CHAIN",
    help="JSON-RPC URL of the chain (the devnet by default).",
)
DeploymentOption = typer.Option(
    None,
    "--deployment",
    envvar="COTUNE_DEPLOYMENT",
    help="Deployment record [default: $COTUNE_HOME/devnet/deployment.json].",
)
StorageOption = typer.Option(
    None,
    "--storage",
    envvar="COTUNE_STORAGE",
    help="Blob store: a directory, file:///path or s3://bucket/prefix "
    "[default: $COTUNE_HOME/storage].",
)
KeyOption = typer.Option(
    "default",
    "--key",
    envvar="COTUNE_KEY",
    help="Keystore to act as: a name in $COTUNE_HOME/keys or a path; unlocked with "
    "$COTUNE_PASSPHRASE.",
)


def open_chain(url: str, deployment: Path | None) -> tuple[Chain, Deployment]:
    """Connect and load (and check) the deployment record."""
    from cotune.chain.connection import connect
    from cotune.chain.deployment import Deployment

    path = deployment or cotune_home() / "devnet" / "deployment.json"
    if not path.exists():
        fail(f"no deployment record at {path}: run `cotune devnet up` or pass --deployment")
    chain = connect(url)
    record = Deployment.load(path)
    if record.chain_id != chain.chain_id:
        fail(f"{path} is for chain {record.chain_id}, but {url} is chain {chain.chain_id}")
    return chain, record


def open_storage(url: str | None) -> BlobStore:
    """The blob store (created when it is a local directory)."""
    from cotune.storage.factory import open_store

    return open_store(url or str(cotune_home() / "storage"))


def load_identity(key: str) -> Identity:
    """Unlock a keystore with the passphrase from the environment (or a prompt)."""
    from cotune.crypto.keystore import load_keystore

    path = resolve_keystore(key, None)
    if not path.exists():
        fail(f"no keystore {path}: create one with `cotune keys new {key}`")
    return load_keystore(path, read_passphrase(DEFAULT_PASSPHRASE_ENV, confirm=False))


def participant(chain_url: str, deployment: Path | None, storage: str | None, key: str) -> Client:
    """An SDK client acting as the keystore ``key``."""
    from cotune.sdk.client import Client

    chain, record = open_chain(chain_url, deployment)
    return Client(chain, record, open_storage(storage), load_identity(key))


def dev_account(chain: Chain, address: str) -> LocalAccount | None:
    """The dev account with ``address`` (dev chains only), or None."""
    for account in chain.dev_accounts:
        if account.address.lower() == address.lower():
            return account
    return None


def operator_secret() -> str:
    """The enclave's operator secret, from ``COTUNE_ENCLAVE_SECRET``."""
    secret = os.environ.get("COTUNE_ENCLAVE_SECRET", "")
    if not secret:
        fail("set COTUNE_ENCLAVE_SECRET: it seals the enclave's keys at rest in the data dir")
    return secret
