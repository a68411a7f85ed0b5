"""The same session across separate processes, driven through the CLI as its users would.

``cotune devnet up`` (anvil), the aggregator as a daemon (``cotune aggregator run``),
the owner and each contributor as separate ``cotune`` commands with their own
keystores, and one shared storage directory. One contributor submits a signed dataset
version (``submit --dataset BUNDLE@1``); ``cotune provenance`` then traces the
downloaded adapter back through its tokens and session to that version's publisher.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cotune.chain.clients.coordinator import SessionState
from cotune.chain.connection import connect
from cotune.chain.deployment import Contracts, Deployment
from cotune.chain.devnet import free_port
from cotune.training.synthetic import demo_data

COTUNE = str(Path(sys.executable).parent / "cotune")
ETHER = 10**18


def _jsonl(records: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


class Cli:
    """Runs ``cotune`` in a shared environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, key: str | None = None) -> dict[str, object]:
        return self.finish(self.start(*args, key=key))

    def start(self, *args: str, key: str | None = None) -> subprocess.Popen[str]:
        """Start ``cotune ARGS --json`` without waiting (for commands that may overlap)."""
        env = self.env | ({"COTUNE_KEY": key} if key else {})
        return subprocess.Popen(
            [COTUNE, *args, "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, proc: subprocess.Popen[str]) -> dict[str, object]:
        """Wait for a started command; it must succeed. Its last JSON line."""
        try:
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, f"{proc.args!r}: {err}{out}"
        payload: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return payload


@pytest.fixture
def devnet_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    env = os.environ | {
        "COTUNE_HOME": str(tmp_path / "home"),
        "COTUNE_CHAIN": f"http://127.0.0.1:{port}",
        "COTUNE_STORAGE": str(tmp_path / "shared-storage"),
        "COTUNE_PASSPHRASE": "correct horse battery staple",
        "COTUNE_ENCLAVE_SECRET": "operator secret",
    }
    up = subprocess.run(
        [COTUNE, "devnet", "up", "--port", str(port), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    try:
        yield env
    finally:
        subprocess.run([COTUNE, "devnet", "down"], env=env, capture_output=True, timeout=60)


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_session_across_processes(devnet_env: dict[str, str], tmp_path: Path) -> None:
    cli = Cli(devnet_env)
    names = ["owner", "alice", "bob", "carol"]
    addresses = {n: str(cli("keys", "new", n)["address"]) for n in names}
    chain = connect(devnet_env["COTUNE_CHAIN"])
    for address in addresses.values():
        chain.fund(address, 5 * ETHER)

    data = demo_data(examples_per_contributor=60)
    files = {}
    for name, records in zip(names[1:], data.contributors.values(), strict=True):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text(_jsonl(records))
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(_jsonl(data.eval_set))

    data_dir = tmp_path / "aggregator"
    api = f"http://127.0.0.1:{free_port()}"
    log = (tmp_path / "aggregator.log").open("w")
    daemon = subprocess.Popen(
        [
            COTUNE,
            "aggregator",
            "run",
            "--data-dir",
            str(data_dir),
            "--poll",
            "0.3",
            "--threads",
            "1",
            "--api-port",
            api.rsplit(":", 1)[1],
        ],
        env=devnet_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    background: list[subprocess.Popen[str]] = []
    try:
        # While the enclave starts: the owner, as a dataset publisher, signs alice's data as
        # v1 of a dataset, then a v2, so v1 is not the bundle's head: alice names her file.
        bundle = tmp_path / "alice-bundle"
        v1 = cli("dataset", "init", str(bundle), "--from", str(files["alice"]),
                 "--id", "alice-notes", "--name", "Alice's notes", key="owner")  # fmt: skip
        v2_data = tmp_path / "alice-v2.jsonl"
        v2_data.write_text("".join(files["alice"].read_text().splitlines(True)[1:]))
        v2 = cli("dataset", "version", str(bundle), "--from", str(v2_data), key="owner")
        assert (v1["version"], v2["version"]) == (1, 2)
        _wait_for(
            lambda: "measurement 0x" in (tmp_path / "aggregator.log").read_text(), 120, "enclave"
        )
        status = subprocess.run(
            [COTUNE, "aggregator", "status", "--data-dir", str(data_dir), "--json"],
            env=devnet_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        measurement = str(cli("enclave", "measurement")["measurement"])
        opened = cli(
            "session",
            "open",
            str(eval_path),
            "--enclave-id",
            "1",
            "--quorum",
            "3",
            "--max",
            "3",
            "--min-stake",
            str(ETHER // 10),
            "--reward",
            str(ETHER),
            "--epochs",
            "1",
            "--measurement",
            measurement,
            *[arg for n in names[1:] for arg in ("--allow", addresses[n])],
            key="owner",
        )
        session_id = str(opened["session_id"])
        for name in names[1:]:
            claim = ["--dataset", f"{bundle}@1"] if name == "alice" else []
            submitted = cli(
                "submit", session_id, str(files[name]), *claim, "--measurement", measurement,
                key=name,
            )  # fmt: skip
            assert submitted["examples"] == 60
            assert submitted["dataset"] == (
                f"alice-notes v1 by {addresses['owner']}" if name == "alice" else None
            )

        deployment = Deployment.load(Path(devnet_env["COTUNE_HOME"]) / "devnet/deployment.json")
        coordinator = Contracts.at(chain, deployment).coordinator

        def finalized() -> bool:
            # Read in process: a `cotune` process per poll would starve the daemon's CPU.
            return coordinator.session(int(session_id)).state is SessionState.FINALIZED

        _wait_for(finalized, 240, "the aggregator to finalize")
        assert cli("session", "status", session_id, key="owner")["state"] == "finalized"
        adapters = set()
        for name in names[1:]:
            out = tmp_path / "downloads" / name
            got = cli("download", session_id, str(out), key=name)
            assert "adapter_model.safetensors" in got["files"]
            adapters.add((out / "adapter_model.safetensors").read_bytes())
            mine = cli("session", "status", session_id, key=name)["you"]
            assert isinstance(mine, dict) and mine["status"] == "accepted"
        assert len(adapters) == 1

        # Provenance of bob's copy, checked online (chain + storage) and offline in the
        # background while the rest runs (claims change no status it checks).
        adapter = tmp_path / "downloads" / "bob"
        background += [
            cli.start("provenance", str(adapter)),
            cli.start("provenance", str(adapter), "--offline"),
        ]
        health = httpx.get(f"{api}/health").json()
        assert health["enclave_registered"] is True and "no hardware guarantee" in health["warning"]
        report = httpx.get(f"{api}/sessions/{session_id}/report").json()
        assert {d["reason"] for d in report["decisions"]} == {"accepted"}
        logs = httpx.get(f"{api}/sessions/{session_id}/logs", params={"follow": "false"}).text
        assert "finalized in" in logs
        claimed = cli("session", "claim", session_id, key="alice")
        assert int(str(claimed["claimed_wei"])) > 0
        recovered = cli("aggregator", "recover", session_id, "--data-dir", str(data_dir))
        assert recovered == {"session_id": int(session_id), "stage": "done", "error": None}

        # A second session, cancelled by its owner while open: stakes come back.
        second = str(cli(
            "session", "open", str(eval_path), "--enclave-id", "1", "--quorum", "3",
            "--max", "3", "--min-stake", str(ETHER // 10), "--allow", addresses["bob"],
            key="owner",
        )["session_id"])  # fmt: skip
        cli("submit", second, str(files["bob"]), key="bob")
        cli("session", "cancel", second, key="owner")
        assert cli("session", "status", second, key="bob")["state"] == "cancelled"
        refund = cli("session", "claim", second, key="bob")
        assert int(str(refund["claimed_wei"])) == ETHER // 10

        # The provenance of the first session's adapter: model tokens -> session ->
        # contributions -> alice's dataset v1, signed by its publisher.
        online, offline = (cli.finish(proc) for proc in background)
        expected = {
            "contributor": addresses["alice"],
            "dataset_id": "alice-notes",
            "version": 1,
            "publisher": addresses["owner"],
            "manifest_hash": v1["manifest_hash"],
            "artifact_sha256": hashlib.sha256(files["alice"].read_bytes()).hexdigest(),
        }
        assert online["ok"] is True and online["session_id"] == int(session_id)
        checks = online["checks"]
        assert isinstance(checks, list) and all(c["ok"] for c in checks), checks
        assert [c["link"] for c in checks] == [
            "session", "adapter", "adapter", "tokens", "contributions", "dataset",
        ]  # fmt: skip
        assert online["datasets"] == [expected]
        tokens = online["tokens"]
        assert isinstance(tokens, list) and len({t["token_id"] for t in tokens}) == 3
        assert sorted(t["holder"] for t in tokens) == sorted(addresses[n] for n in names[1:])
        assert offline["ok"] is True and offline["datasets"] == [expected]
        offline_checks = offline["checks"]
        assert isinstance(offline_checks, list)
        assert [c["link"] for c in offline_checks] == ["dataset"]
        assert offline["tokens"] == []
        recorded = json.loads((adapter / "cotune.json").read_text())["provenance"]
        assert [(p["contributor"], p["version"]) for p in recorded] == [(addresses["alice"], 1)]
    finally:
        for proc in background:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        log.close()
