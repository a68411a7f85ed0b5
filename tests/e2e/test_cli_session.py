"""The same session across separate processes, driven through the CLI as its users would.

``cotune devnet up`` (anvil), the aggregator as a daemon (``cotune aggregator run``),
the owner and each contributor as separate ``cotune`` commands with their own
keystores, and one shared storage directory.
"""

from __future__ import annotations

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
        env = self.env | ({"COTUNE_KEY": key} if key else {})
        done = subprocess.run(
            [COTUNE, *args, "--json"], env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, f"cotune {' '.join(args)}: {done.stderr}{done.stdout}"
        payload: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
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
    try:
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
            submitted = cli(
                "submit", session_id, str(files[name]), "--measurement", measurement, key=name
            )
            assert submitted["examples"] == 60

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
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        log.close()
