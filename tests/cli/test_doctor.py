"""``cotune doctor`` against a real anvil, a registered dev enclave, and broken pieces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotune.aggregator.service import Aggregator, AggregatorConfig
from cotune.chain.connection import connect
from cotune.chain.deployment import deploy_all
from cotune.chain.devnet import free_port, start_anvil
from cotune.cli.app import app
from cotune.storage.local import LocalStore

runner = CliRunner()


@pytest.fixture(scope="module")
def anvil() -> Iterator[str]:
    port = free_port()
    process = start_anvil(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def world(anvil: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("doctor")
    chain = connect(anvil)
    operator = chain.dev_accounts[0]
    deployment = deploy_all(chain, operator)
    record = root / "deployment.json"
    deployment.save(record)
    store = LocalStore(root / "store")
    aggregator = Aggregator(
        chain, deployment, store, AggregatorConfig(root / "agg", operator_secret="s")
    )
    enclave_id = aggregator.register(operator, operator)
    return {
        "chain": anvil,
        "deployment": str(record),
        "storage": str(root / "store"),
        "enclave": str(enclave_id),
    }


def _doctor(*args: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(app, ["doctor", *args, "--json"])
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def _statuses(report: dict[str, object]) -> dict[str, str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {c["name"]: c["status"] for c in checks}


def test_a_healthy_setup(world: dict[str, str]) -> None:
    code, report = _doctor(
        "--chain", world["chain"], "--deployment", world["deployment"],
        "--storage", world["storage"], "--enclave-id", world["enclave"],
    )  # fmt: skip
    assert code == 0 and report["ok"] is True
    # A dev enclave is never plain "ok": it carries no hardware guarantee.
    assert _statuses(report) == {
        "chain": "ok", "contracts": "ok", "enclave": "warn", "storage": "ok",
    }  # fmt: skip
    enclave = next(c for c in report["checks"] if c["name"] == "enclave")  # type: ignore[union-attr]
    assert "no hardware guarantee" in enclave["detail"]


def test_an_unreachable_chain_fails_but_storage_is_still_checked(tmp_path: Path) -> None:
    code, report = _doctor(
        "--chain", f"http://127.0.0.1:{free_port()}", "--storage", str(tmp_path / "s")
    )
    assert code == 1 and report["ok"] is False
    assert _statuses(report) == {"chain": "fail", "storage": "ok"}


def test_a_deployment_for_missing_code_fails(world: dict[str, str], tmp_path: Path) -> None:
    record = json.loads(Path(world["deployment"]).read_text())
    record["coordinator"] = "0x" + "11" * 20
    broken = tmp_path / "deployment.json"
    broken.write_text(json.dumps(record))
    code, report = _doctor(
        "--chain", world["chain"], "--deployment", str(broken), "--storage", world["storage"]
    )
    assert code == 1
    assert _statuses(report)["contracts"] == "fail"


def test_an_unknown_enclave_fails(world: dict[str, str]) -> None:
    code, report = _doctor(
        "--chain", world["chain"], "--deployment", world["deployment"],
        "--storage", world["storage"], "--enclave-id", "99",
    )  # fmt: skip
    assert code == 1 and _statuses(report)["enclave"] == "fail"


def test_an_unwritable_storage_fails(world: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, report = _doctor("--chain", world["chain"], "--deployment", world["deployment"],
                           "--storage", str(blocker / "store"))  # fmt: skip
    assert code == 1 and _statuses(report)["storage"] == "fail"


def test_an_account_without_funds_is_a_warning(world: dict[str, str], tmp_path: Path) -> None:
    keystore = tmp_path / "acct.json"
    made = runner.invoke(
        app, ["keys", "new", str(keystore), "--json"], env={"COTUNE_PASSPHRASE": "pw"}
    )
    assert made.exit_code == 0, made.output
    address = json.loads(made.stdout)["address"]
    args = ["--chain", world["chain"], "--deployment", world["deployment"]]
    args += ["--storage", world["storage"], "--key", str(keystore)]
    code, report = _doctor(*args)
    assert code == 0 and _statuses(report)["account"] == "warn"
    connect(world["chain"]).fund(address, 10**18)
    code, report = _doctor(*args)
    assert code == 0 and _statuses(report)["account"] == "ok"
