"""Selling a dataset version through the ``DatasetMarket``, driven through the real CLI.

One anvil, one deployment; the publisher and each buyer are separate ``cotune``
processes with their own keystores, and ``cotune dataset serve --sell`` runs as its own
process: buyers pay on chain, redeem a signed claim over HTTP for a member token and
download the artifact, verified against the signed log.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from cli_helpers import chat_jsonl, wait_for_server

from cotune.chain.clients.dataset_market import DatasetMarketClient, dataset_key
from cotune.chain.connection import Chain, connect
from cotune.chain.deployment import Deployment, deploy_all
from cotune.chain.devnet import free_port, start_anvil
from cotune.crypto.identity import Identity
from cotune.crypto.keystore import save_keystore

COTUNE = str(Path(sys.executable).parent / "cotune")
ETHER = 10**18
PRICE = 10**16 + 7  # odd, so an off-by-some payment cannot pass for it
DATASET_ID = "clinic-notes"
FAST_SCRYPT_N = 1 << 12
NAMES = ("publisher", "alice", "carol", "dave")


@dataclass
class Market:
    """A running anvil with the contracts, and the environment every ``cotune`` shares."""

    chain: Chain
    deployment: Deployment
    env: dict[str, str]

    def client(self) -> DatasetMarketClient:
        return DatasetMarketClient(self.chain, self.deployment.dataset_market)

    def start(self, *args: str, key: str | None = None) -> subprocess.Popen[str]:
        env = self.env | ({"COTUNE_KEY": key} if key else {})
        return subprocess.Popen(
            [COTUNE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def finish(self, proc: subprocess.Popen[str], ok: bool = True) -> tuple[dict[str, object], str]:
        """Wait for ``proc``; its last JSON line (when ``ok``) and its stderr."""
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not ok:
            assert proc.returncode != 0, f"{proc.args!r}: expected a failure, got\n{out}"
            return {}, err
        assert proc.returncode == 0, f"{proc.args!r}: {err}{out}"
        payload: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return payload, err

    def __call__(self, *args: str, key: str | None = None) -> dict[str, object]:
        return self.finish(self.start(*args, "--json", key=key))[0]

    def refused(self, *args: str, key: str | None = None) -> str:
        """Run a command that must fail; its error output, on one line."""
        return " ".join(self.finish(self.start(*args, key=key), ok=False)[1].split())

    def keystore(self, name: str) -> str:
        """A funded identity in ``$COTUNE_HOME/keys/<name>.json``; its address.

        Written in process with a cheap scrypt (like tests/crypto): every ``cotune``
        below unlocks it the normal way, by name and ``COTUNE_PASSPHRASE``, in
        milliseconds instead of a second.
        """
        identity = Identity.generate()
        path = Path(self.env["COTUNE_HOME"]) / "keys" / f"{name}.json"
        save_keystore(path, identity, self.env["COTUNE_PASSPHRASE"], scrypt_n=FAST_SCRYPT_N)
        self.chain.fund(identity.address, ETHER)
        return identity.address

    def gas_cost(self, tx_hash: str) -> int:
        receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    port = free_port()
    anvil = start_anvil(port)
    try:
        chain = connect(f"http://127.0.0.1:{port}")
        deployment = deploy_all(chain, chain.dev_accounts[0])
        deployment.save(tmp_path / "deployment.json")
        env = os.environ | {
            "COTUNE_HOME": str(tmp_path / "home"),
            "COTUNE_CHAIN": chain.url,
            "COTUNE_DEPLOYMENT": str(tmp_path / "deployment.json"),
            "COTUNE_PASSPHRASE": "market passphrase",
        }
        yield Market(chain, deployment, env)
    finally:
        anvil.terminate()
        anvil.wait(timeout=30)


def test_sell_buy_rebuy_refuse_stop_withdraw(market: Market, tmp_path: Path) -> None:
    root, bundle = tmp_path / "server", tmp_path / "bundle"
    url = f"http://127.0.0.1:{free_port()}"
    server = market.start(
        "dataset", "serve", "--sell", "--root", str(root), "--port", url.rsplit(":", 1)[1]
    )
    try:
        address = {name: market.keystore(name) for name in NAMES}

        market("dataset", "init", str(bundle), "--from",
               str(chat_jsonl(tmp_path / "a.jsonl", ["x", "y"])), "--id", DATASET_ID,
               "--name", "Clinic notes", key="publisher")  # fmt: skip
        publishing = market.start("dataset", "publish", str(bundle), "--root", str(root), "--json")
        selling = market.start("dataset", "sell", str(bundle), "--version", "1",
                               "--price", str(PRICE), "--json", key="publisher")  # fmt: skip
        published, _ = market.finish(publishing)
        sold, _ = market.finish(selling)
        assert published["version"] == 1
        artifact = (bundle / "data.jsonl").read_bytes()
        assert sold["on_sale"] is True and sold["price"] == PRICE
        assert sold["market"] == market.deployment.dataset_market
        wait_for_server(url, server)
        listed = httpx.get(f"{url}/market", timeout=10).json()
        assert listed["prices"] == {"1": PRICE} and listed["publisher"] == address["publisher"]

        client = market.client()
        key = dataset_key(address["publisher"], DATASET_ID)
        listing = client.listing(key, 1)
        assert listing.active and listing.price == PRICE
        assert "0x" + listing.entry_hash.hex() == sold["entry_hash"]

        # alice buys: she pays exactly the price (plus gas), and gets the verified bytes.
        before = market.chain.balance(address["alice"])
        first = market("dataset", "buy", url, "1", str(tmp_path / "alice.jsonl"), key="alice")
        assert first["paid"] is True and first["price"] == PRICE
        got = (tmp_path / "alice.jsonl").read_bytes()
        assert got == artifact
        assert first["sha256"] == hashlib.sha256(artifact).hexdigest()
        spent = before - market.chain.balance(address["alice"])
        assert spent >= PRICE
        assert spent == PRICE + market.gas_cost(str(first["tx"]))
        receipt = client.receipt_of(key, 1, address["alice"])
        assert receipt == first["receipt_id"] and receipt > 0
        assert client.proceeds(address["publisher"]) == PRICE
        # The token the server minted opens v1's artifact over HTTP.
        fetched = httpx.get(
            f"{url}/versions/1/artifact",
            headers={"Authorization": f"Bearer {first['token']}"},
            timeout=10,
        )
        assert fetched.status_code == 200 and fetched.content == artifact

        # alice again (pays nothing: a new token on her receipt) while carol, whose
        # ceiling is one wei under the price, is refused before paying anything.
        carol_before = market.chain.balance(address["carol"])
        again = market.start(
            "dataset", "buy", url, "1", str(tmp_path / "alice-2.jsonl"), "--json", key="alice"
        )
        too_dear = market.start(
            "dataset", "buy", url, "1", str(tmp_path / "carol.jsonl"),
            "--max-price", str(PRICE - 1), key="carol",
        )  # fmt: skip
        second, _ = market.finish(again)
        _, carol_error = market.finish(too_dear, ok=False)
        assert second["paid"] is False and second["tx"] is None
        assert second["receipt_id"] == first["receipt_id"]
        assert second["token"] != first["token"] and second["replaced"] == 1
        # One live token per receipt: her first token stopped working.
        replaced = httpx.get(
            f"{url}/versions/1/artifact",
            headers={"Authorization": f"Bearer {first['token']}"},
            timeout=10,
        )
        assert replaced.status_code == 403 and "replaced" in replaced.json()["detail"]
        assert (tmp_path / "alice-2.jsonl").read_bytes() == artifact
        assert f"costs {PRICE} wei, above --max-price {PRICE - 1} wei" in " ".join(
            carol_error.split()
        )
        assert market.chain.balance(address["carol"]) == carol_before
        assert client.receipt_of(key, 1, address["carol"]) == 0
        assert not (tmp_path / "carol.jsonl").exists()
        assert client.proceeds(address["publisher"]) == PRICE
        assert client.receipt_count() == 1

        # The publisher stops selling: dave, new, is refused and pays nothing, while the
        # publisher withdraws exactly one price (dave's refusal sends no transaction).
        stopped = market("dataset", "sell", str(bundle), "--version", "1", "--stop",
                         key="publisher")  # fmt: skip
        assert stopped["on_sale"] is False
        assert not client.listing(key, 1).active
        assert httpx.get(f"{url}/market", timeout=10).json()["prices"] == {}
        dave_before = market.chain.balance(address["dave"])
        publisher_before = market.chain.balance(address["publisher"])
        late = market.start("dataset", "buy", url, "1", str(tmp_path / "dave.jsonl"), key="dave")
        withdrawn, _ = market.finish(market.start("dataset", "withdraw", "--json", key="publisher"))
        _, late_error = market.finish(late, ok=False)
        # alice's receipt outlives the listing: she still redeems a token, paying nothing.
        kept = market("dataset", "buy", url, "1", str(tmp_path / "alice-3.jsonl"), key="alice")
        assert kept["paid"] is False and kept["receipt_id"] == first["receipt_id"]
        assert (tmp_path / "alice-3.jsonl").read_bytes() == artifact
        assert "not on sale" in " ".join(late_error.split()), late_error
        assert market.chain.balance(address["dave"]) == dave_before
        assert not (tmp_path / "dave.jsonl").exists()
        assert client.receipt_count() == 1

        # The publisher revokes alice's purchase: it stays revoked, whatever she claims.
        revoked = market("dataset", "revoke", "--receipt", str(first["receipt_id"]),
                         "--root", str(root))  # fmt: skip
        records = cast(list[dict[str, Any]], revoked["revoked"])
        assert len(records) == 3  # every token ever minted against it (two were replaced)
        assert {(r["receipt_id"], r["revoked"]["reason"]) for r in records} == {
            (first["receipt_id"], "publisher")
        }
        shut_out = market.refused(
            "dataset", "buy", url, "1", str(tmp_path / "alice-4.jsonl"), key="alice"
        )
        assert f"revoked the token of receipt {first['receipt_id']}" in shut_out, shut_out
        assert "Traceback" not in shut_out and not (tmp_path / "alice-4.jsonl").exists()
        by_buyer = market("dataset", "revoke", "--buyer", address["alice"], "--root", str(root))
        assert by_buyer["revoked"] == records  # already revoked: nothing changes
        assert client.receipt_count() == 1

        assert withdrawn == {"address": address["publisher"], "amount": PRICE}  # once only
        assert client.proceeds(address["publisher"]) == 0
        gained = market.chain.balance(address["publisher"]) - publisher_before
        last = market.chain.w3.eth.get_block("latest", full_transactions=True)
        (tx,) = cast(list[Any], last["transactions"])  # anvil mines one per block
        assert tx["from"] == address["publisher"]
        assert gained == PRICE - market.gas_cost(tx["hash"].to_0x_hex())
        empty = market.refused("dataset", "withdraw", key="publisher")
        assert "no proceeds to withdraw" in empty, empty
        assert "Traceback" not in empty
        assert market.chain.balance(address["publisher"]) == publisher_before + gained
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
