"""The aggregator killed with SIGKILL at every stage, restarted each time: one finalize.

The daemon runs as a real process (``cotune aggregator run --once``) against anvil, with
``COTUNE_FAULT_AT`` naming the point where it kills itself. Each run resumes from what
the previous one left (its SQLite checkpoints and the chain), dies at the next point,
and a last clean run finishes the session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

from cotune.aggregator.pipeline import FAULT_ENV, FAULT_POINTS
from cotune.aggregator.spec import SessionSpec
from cotune.aggregator.state import SqliteStateStore, Stage
from cotune.chain.connection import Chain
from cotune.chain.deployment import Deployment, deploy_all
from cotune.chain.events import Event, SessionFinalized, Slashed, decode_logs
from cotune.crypto.identity import Identity
from cotune.sdk.client import Client, SessionOptions
from cotune.storage.local import LocalStore
from cotune.training.config import LoraHyperparams
from cotune.training.synthetic import demo_data

COTUNE = str(Path(sys.executable).parent / "cotune")
ETHER = 10**18


def _jsonl(records: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


E = TypeVar("E", bound=Event)


def _events(chain: Chain, address: str, kind: type[E]) -> list[E]:
    logs = chain.w3.eth.get_logs({"address": address, "fromBlock": 0, "toBlock": "latest"})  # type: ignore[arg-type]
    return [e for e in decode_logs(logs) if isinstance(e, kind)]


def test_sigkill_at_every_stage_then_one_finalize(
    anvil_chain: tuple[str, Chain], tmp_path: Path
) -> None:
    url, chain = anvil_chain
    deployment: Deployment = deploy_all(chain, chain.dev_accounts[0])
    record = tmp_path / "deployment.json"
    deployment.save(record)
    storage = tmp_path / "storage"
    data_dir = tmp_path / "aggregator"
    env = os.environ | {"COTUNE_ENCLAVE_SECRET": "operator", "COTUNE_HOME": str(tmp_path)}
    command = [
        COTUNE, "aggregator", "run", "--once", "--chain", url, "--deployment", str(record),
        "--storage", str(storage), "--data-dir", str(data_dir), "--threads", "1",
        "--api-port", "0", "--json",
    ]  # fmt: skip

    def run(fault: str | None) -> subprocess.CompletedProcess[str]:
        extra = {FAULT_ENV: fault} if fault else {}
        return subprocess.run(command, env=env | extra, capture_output=True, text=True, timeout=300)

    first = run(None)  # registers the enclave; no session yet
    assert first.returncode == 0, first.stderr
    started = json.loads(first.stdout.splitlines()[0])
    assert started["enclave_id"] == 1 and "no hardware guarantee" in started["warning"]

    store = LocalStore(storage)
    data = demo_data(examples_per_contributor=60)
    owner = Client(
        chain, deployment, store, Identity(chain.dev_accounts[1], Identity.generate().hpke)
    )
    files = {name: _jsonl(r) for name, r in list(data.contributors.items())[:2]}
    files["poisoned"] = _jsonl(data.poisoned["random_text"])
    parties = {name: Identity.generate() for name in files}
    for ident in parties.values():
        chain.fund(ident.address, ETHER)
    session_id = owner.open_session(
        _jsonl(data.eval_set),
        SessionOptions(
            enclave_id=1, quorum=3, max_contributors=3, min_stake=ETHER // 100,
            spec=SessionSpec(hyperparams=LoraHyperparams(epochs=1)),
        ),
    )  # fmt: skip
    clients = {n: Client(chain, deployment, store, ident) for n, ident in parties.items()}
    for name, client in clients.items():
        client.submit(session_id, files[name])

    for point in FAULT_POINTS:
        crashed = run(point)
        assert crashed.returncode == -signal.SIGKILL, (point, crashed.stderr[-2000:])
    last = run(None)
    assert last.returncode == 0, last.stderr
    messages = [json.loads(line)["message"] for line in last.stdout.splitlines()[1:]]
    assert messages[-1] == "session complete"

    state = SqliteStateStore(data_dir / "state.sqlite3")
    done = state.get(session_id)
    assert done is not None and done.stage is Stage.DONE
    assert done.attempts >= 4  # the compute stages were redone after each early crash
    finalized = _events(chain, deployment.coordinator, SessionFinalized)
    assert len(finalized) == 1
    slashed = _events(chain, deployment.coordinator, Slashed)
    assert len(slashed) == 1 and slashed[0].contributor == parties["poisoned"].address
    adapters = {
        (clients[n].download(session_id, tmp_path / n) / "adapter_model.safetensors").read_bytes()
        for n in ("contributor_1_clinic", "contributor_2_capitals")
    }
    assert len(adapters) == 1
