"""The session commands refuse bad input before touching the network or spending anything."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cotune.chain.devnet import free_port
from cotune.cli.app import app

runner = CliRunner()


def test_submit_reports_every_bad_line_and_sends_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n{"messages": []}\n')
    # The chain URL points nowhere: validation must fail first, before any connection.
    result = runner.invoke(
        app, ["submit", "1", str(bad), "--chain", f"http://127.0.0.1:{free_port()}"]
    )
    assert result.exit_code == 1
    assert "line 2" in result.output and "line 3" in result.output
    assert "nothing was encrypted, uploaded or staked" in result.output


def test_commands_without_a_deployment_say_how_to_get_one(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "fine"}\n')
    missing = tmp_path / "nope.json"
    for args in (
        ["submit", "1", str(good)],
        ["session", "status", "1"],
        ["download", "1", str(tmp_path / "out")],
    ):
        result = runner.invoke(app, [*args, "--deployment", str(missing)])
        assert result.exit_code == 1, args
        assert "cotune devnet up" in result.output


def test_enclave_measurement_is_stable_hex() -> None:
    first = runner.invoke(app, ["enclave", "measurement"])
    second = runner.invoke(app, ["enclave", "measurement", "--json"])
    assert first.exit_code == second.exit_code == 0
    value = first.stdout.strip()
    assert value.startswith("0x") and len(value) == 66
    assert f'"measurement": "{value}"' in second.stdout


def test_aggregator_status_without_state_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["aggregator", "status", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no aggregator state" in result.output


def test_aggregator_run_needs_the_operator_secret(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["aggregator", "run", "--once", "--data-dir", str(tmp_path), "--deployment",
         str(tmp_path / "nope.json")],
        env={"COTUNE_ENCLAVE_SECRET": ""},
    )  # fmt: skip
    assert result.exit_code == 1
    assert "COTUNE_ENCLAVE_SECRET" in result.output
