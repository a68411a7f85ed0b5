"""``cotune devnet up|down|status``: anvil with deployed contracts whose state survives restarts."""

import json
from pathlib import Path

from typer.testing import CliRunner

from cotune.chain import Contracts, Deployment, SessionParams, SessionState, connect
from cotune.chain.deployment import RECORD_VERSION
from cotune.chain.devnet import free_port
from cotune.cli.app import app

runner = CliRunner()


def _cli(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["devnet", *args, "--json"])
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = json.loads(result.stdout)
    return payload


def test_devnet_survives_restart(tmp_path: Path) -> None:
    home = str(tmp_path / "devnet")
    port = str(free_port())
    try:
        first = _cli("up", "--home", home, "--port", port)
        assert first["running"] is True
        assert first["deployed_now"] is True
        accounts = first["accounts"]
        assert isinstance(accounts, list) and len(accounts) == 10
        assert _cli("up", "--home", home, "--port", port)["deployed_now"] is False

        chain = connect(str(first["url"]))
        deployment = Deployment.load(Path(home) / "deployment.json")
        owner = chain.dev_accounts[0]
        contracts = Contracts.at(chain, deployment, owner)
        hpke_key = b"\x00\x20" + bytes(range(32))
        evidence = contracts.verifier.attest(owner, owner.address, hpke_key, bytes(32))
        enclave_id = contracts.registry.register(
            owner.address, hpke_key, bytes(32), deployment.dev_verifier, evidence
        )
        now = chain.timestamp()
        session_id = contracts.coordinator.create_session(
            SessionParams(enclave_id, bytes(32), 1, 2, now + 600, now + 1200), reward_pool=123
        )

        assert _cli("down", "--home", home)["stopped"] is True
        stopped = _cli("status", "--home", home)
        assert stopped["running"] is False
        assert stopped["contracts"] == json.loads(json.dumps(first["contracts"]))

        again = _cli("up", "--home", home, "--port", port)
        assert again["deployed_now"] is False, "state was not restored: contracts redeployed"
        chain = connect(str(again["url"]))
        session = Contracts.at(chain, deployment).coordinator.session(session_id)
        assert session.state is SessionState.OPEN
        assert session.pool == 123
        status = _cli("status", "--home", home)
        assert status["running"] is True
        assert isinstance(status["block_number"], int)
    finally:
        runner.invoke(app, ["devnet", "down", "--home", home])
    assert _cli("down", "--home", home)["stopped"] is False


def test_up_redeploys_over_a_record_from_an_older_release(tmp_path: Path) -> None:
    home = tmp_path / "devnet"
    port = str(free_port())
    try:
        first = _cli("up", "--home", str(home), "--port", port)
        record = home / "deployment.json"
        older = json.loads(record.read_text()) | {"version": RECORD_VERSION - 1}
        record.write_text(json.dumps(older))

        again = _cli("up", "--home", str(home), "--port", port)
        assert again["deployed_now"] is True
        redeployed = Deployment.load(record)
        assert redeployed.version == RECORD_VERSION
        assert redeployed.coordinator != older["coordinator"]
        assert again["contracts"] != first["contracts"]
        redeployed.check(connect(str(again["url"])))
    finally:
        runner.invoke(app, ["devnet", "down", "--home", str(home)])


def test_status_without_devnet(tmp_path: Path) -> None:
    status = _cli("status", "--home", str(tmp_path))
    assert status == status | {"running": False, "pid": None, "contracts": None}
    result = runner.invoke(app, ["devnet", "status", "--home", str(tmp_path)])
    assert "no devnet running" in result.output
