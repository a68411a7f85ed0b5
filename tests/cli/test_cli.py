"""The ``cotune`` CLI: version, keys and the demo, driven as a user would."""

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotune import __version__
from cotune.cli.app import app
from cotune.crypto import PublicIdentity

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_console_script_installed() -> None:
    out = subprocess.run(
        [Path(sys.executable).parent / "cotune", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "keys" in out.stdout


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "alice.json"
    result = runner.invoke(
        app, ["keys", "new", str(path), "--json"], env={"COTUNE_PASSPHRASE": "pw1"}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["keystore"] == str(path)
    return path


def test_new_makes_0600_file(keystore: Path) -> None:
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600


def test_new_refuses_existing(keystore: Path) -> None:
    result = runner.invoke(app, ["keys", "new", str(keystore)], env={"COTUNE_PASSPHRASE": "x"})
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_show_unlock_and_wrong_passphrase(keystore: Path) -> None:
    ok = runner.invoke(
        app, ["keys", "show", str(keystore), "--unlock", "--json"], env={"COTUNE_PASSPHRASE": "pw1"}
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["permissions_ok"] is True
    bad = runner.invoke(
        app, ["keys", "show", str(keystore), "--unlock"], env={"COTUNE_PASSPHRASE": "nope"}
    )
    assert bad.exit_code == 1
    assert "wrong passphrase" in bad.output


def test_export_public(keystore: Path) -> None:
    result = runner.invoke(app, ["keys", "export-public", str(keystore)])
    assert result.exit_code == 0
    public = PublicIdentity.from_json(result.stdout)
    assert public.hpke_public_key.suite.value == "x25519"


def test_no_passphrase_without_terminal(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "new", str(tmp_path / "b.json")], env={})
    assert result.exit_code == 1
    assert "COTUNE_PASSPHRASE" in result.output
    assert not (tmp_path / "b.json").exists()


def test_demo_json() -> None:
    result = runner.invoke(app, ["demo", "--json", "--examples", "60"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    assert all(report["checks"].values())
    assert any(name.startswith("provenance verifies") for name in report["checks"])
    assert set(report) >= {"contributors", "eval_loss", "adapter_sha256", "gas", "seconds"}
    decisions = {c["name"]: c["decision"] for c in report["contributors"]}
    assert decisions == {
        "contributor_1_clinic": "accepted",
        "contributor_2_capitals": "accepted",
        "contributor_3_units": "accepted",
        "poisoned_random_text": "rejected",
    }
    assert len(set(report["adapter_sha256"].values())) == 1
    assert report["eval_loss"]["joint"] < min(report["eval_loss"]["solo"].values())
    assert report["gas"]["finalize"] > 0 and report["gas"]["slash:poisoned_random_text"] > 0
    accuracy = report["task_accuracy"]
    assert set(accuracy["solo"]) == set(report["eval_loss"]["solo"])
    for scored in (accuracy["base"], accuracy["joint"], *accuracy["solo"].values()):
        assert scored["scored"] == 60
        assert set(scored["by_tag"]) == {"clinic", "capitals", "units"}
    assert accuracy["base"]["accuracy"] == 0.0


def test_demo_rejects_an_unknown_poison() -> None:
    result = runner.invoke(app, ["demo", "--poison", "nope"])
    assert result.exit_code == 2
    assert "random_text" in result.output
