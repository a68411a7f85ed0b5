"""``cotune dataset``: init, version, verify and status, as a publisher would use them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import chat_jsonl, wait_for_server
from typer.testing import CliRunner

from cotune.chain.devnet import free_port
from cotune.cli.app import app

runner = CliRunner()
ENV = {"COTUNE_PASSPHRASE": "publisher passphrase"}


def _invoke(*args: str) -> dict[str, object]:
    result = runner.invoke(app, [*args, "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return payload


@pytest.fixture
def publisher(tmp_path: Path) -> str:
    keystore = tmp_path / "publisher.json"
    _invoke("keys", "new", str(keystore))
    return str(keystore)


def test_init_version_verify(tmp_path: Path, publisher: str) -> None:
    bundle = tmp_path / "bundle"
    v1 = _invoke(
        "dataset", "init", str(bundle), "--from", str(chat_jsonl(tmp_path / "a.jsonl", ["x", "y"])),
        "--id", "clinic-notes", "--name", "Clinic notes", "--key", publisher,
    )  # fmt: skip
    assert v1["version"] == 1
    v2 = _invoke(
        "dataset", "version", str(bundle), "--from",
        str(chat_jsonl(tmp_path / "b.jsonl", ["x", "y", "z"])), "--key", publisher,
    )  # fmt: skip
    assert v2["version"] == 2 and v2["manifest_hash"] != v1["manifest_hash"]
    verified = _invoke("dataset", "verify", str(bundle))
    assert verified["ok"] is True and verified["versions"] == 2
    status = _invoke("dataset", "status", str(bundle))
    assert status["manifest"]["example_count"] == 3  # type: ignore[index]


def test_a_tampered_artifact_fails_verify(tmp_path: Path, publisher: str) -> None:
    bundle = tmp_path / "bundle"
    _invoke(
        "dataset", "init", str(bundle), "--from", str(chat_jsonl(tmp_path / "a.jsonl", ["x"])),
        "--id", "d", "--name", "D", "--key", publisher,
    )  # fmt: skip
    artifact = bundle / "data.jsonl"
    artifact.write_text(artifact.read_text().replace('"x"', '"w"'))
    result = runner.invoke(app, ["dataset", "verify", str(bundle)], env=ENV)
    assert result.exit_code == 1
    assert "Artifact" in result.output


def test_another_publisher_is_refused(tmp_path: Path, publisher: str) -> None:
    bundle = tmp_path / "bundle"
    _invoke(
        "dataset", "init", str(bundle), "--from", str(chat_jsonl(tmp_path / "a.jsonl", ["x"])),
        "--id", "d", "--name", "D", "--key", publisher,
    )  # fmt: skip
    other = tmp_path / "other.json"
    _invoke("keys", "new", str(other))
    result = runner.invoke(
        app,
        ["dataset", "version", str(bundle), "--from",
         str(chat_jsonl(tmp_path / "b.jsonl", ["x", "y"])), "--key", str(other)],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "ForeignSignerError" in result.output
    pinned = runner.invoke(
        app, ["dataset", "verify", str(bundle), "--publisher", "0x" + "22" * 20], env=ENV
    )
    assert pinned.exit_code == 1


def test_init_refuses_bad_jsonl_and_creates_nothing(tmp_path: Path, publisher: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\nnot json\n")
    bundle = tmp_path / "bundle"
    result = runner.invoke(
        app,
        ["dataset", "init", str(bundle), "--from", str(bad), "--id", "d", "--name", "D",
         "--key", publisher],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "line 2" in result.output and "no bundle was created" in result.output
    assert not bundle.exists()


def test_anonymize_writes_placeholders_and_counts_only(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text(
        json.dumps({"text": "write to ann@example.org, card 4111 1111 1111 1111"}) + "\n"
        + json.dumps({"text": "ann@example.org again"}) + "\n"
    )  # fmt: skip
    out = tmp_path / "clean.jsonl"
    report = _invoke("dataset", "anonymize", str(raw), str(out))
    assert report["counts"] == {"EMAIL": 2, "CARD": 1}
    text = out.read_text()
    assert "ann@example.org" not in text and "4111" not in text
    assert text.count("<EMAIL_1>") == 2 and "<CARD_1>" in text
    assert "ann@example.org" not in json.dumps(report)
    human = runner.invoke(app, ["dataset", "anonymize", str(raw), str(tmp_path / "c2.jsonl")])
    assert human.exit_code == 0 and "EMAIL 2 (1 distinct)" in human.output
    assert "ann@" not in human.output


def test_publish_serve_admit_get_revoke(tmp_path: Path, publisher: str) -> None:
    bundle, root = tmp_path / "bundle", tmp_path / "server"
    _invoke(
        "dataset", "init", str(bundle), "--from", str(chat_jsonl(tmp_path / "a.jsonl", ["x", "y"])),
        "--id", "d", "--name", "D", "--key", publisher,
    )  # fmt: skip
    _invoke("dataset", "publish", str(bundle), "--root", str(root))
    token = str(
        _invoke("dataset", "admit", "buyer", "--max-version", "1", "--root", str(root))["token"]
    )
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "cotune"), "dataset", "serve", "--root", str(root),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, server)
        out = tmp_path / "got.jsonl"
        got = _invoke("dataset", "get", url, "1", str(out), "--token", token)
        assert out.read_bytes() == (bundle / "data.jsonl").read_bytes()
        assert got["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        _invoke("dataset", "revoke", "buyer", "--root", str(root))
        refused = runner.invoke(
            app, ["dataset", "get", url, "1", str(tmp_path / "again.jsonl"), "--token", token]
        )
        assert refused.exit_code == 1
        assert not (tmp_path / "again.jsonl").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
