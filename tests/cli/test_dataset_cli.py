"""``cotune dataset``: init, version, verify and status, as a publisher would use them."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_helpers import chat_jsonl, wait_for_server
from typer.testing import CliRunner

from cotune.chain.devnet import free_port
from cotune.cli.app import app
from cotune.dataset.tokens import LEGACY_TOKENS_FORMAT, TOKENS_FORMAT, hash_token

runner = CliRunner()
ENV = {"COTUNE_PASSPHRASE": "publisher passphrase"}


def _invoke(*args: str) -> dict[str, object]:
    result = runner.invoke(app, [*args, "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return payload


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a 0o644 open really makes a world-readable file."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


@pytest.mark.usefixtures("umask_022")
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
    assert _mode(out) == 0o600  # redacted, but still the dataset
    assert "ann@example.org" not in json.dumps(report)
    human = runner.invoke(app, ["dataset", "anonymize", str(raw), str(tmp_path / "c2.jsonl")])
    assert human.exit_code == 0 and "EMAIL 2 (1 distinct)" in human.output
    assert "ann@" not in human.output


@pytest.mark.usefixtures("umask_022")
def test_publish_serve_admit_get_revoke(tmp_path: Path, publisher: str) -> None:
    bundle, root = tmp_path / "bundle", tmp_path / "server"
    _invoke(
        "dataset", "init", str(bundle), "--from", str(chat_jsonl(tmp_path / "a.jsonl", ["x", "y"])),
        "--id", "d", "--name", "D", "--key", publisher,
    )  # fmt: skip
    _invoke("dataset", "publish", str(bundle), "--root", str(root))
    # A token file in the old format, left by an earlier cotune: the server still starts.
    old_token = "an-old-admission-token"
    (root / "tokens.json").write_text(
        json.dumps(
            {
                "format": LEGACY_TOKENS_FORMAT,
                "tokens": [
                    {
                        "token_sha256": hash_token(old_token),
                        "label": "old-member",
                        "max_version": 1,
                        "created_at": 1700000000,
                        "revoked": False,
                    }
                ],
            },
            indent=2,
        )
    )
    admitted = _invoke("dataset", "admit", "buyer", "--max-version", "1", "--root", str(root))
    assert admitted["scope"] == {"kind": "up_to", "version": 1}
    token = str(admitted["token"])
    assert json.loads((root / "tokens.json").read_text().splitlines()[0]) == {
        "format": TOKENS_FORMAT
    }
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
        assert _mode(out) == 0o600
        old = _invoke("dataset", "get", url, "1", str(tmp_path / "old.jsonl"), "--token", old_token)
        assert old["version"] == 1
        revoked = _invoke("dataset", "revoke", "buyer", "--root", str(root))
        (record,) = revoked["revoked"]  # type: ignore[misc]
        assert record["label"] == "buyer" and record["revoked"]["reason"] == "publisher"
        refused = runner.invoke(
            app, ["dataset", "get", url, "1", str(tmp_path / "again.jsonl"), "--token", token]
        )
        assert refused.exit_code == 1
        assert "revoked by the publisher" in " ".join(refused.output.split())
        assert not (tmp_path / "again.jsonl").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of a label"),
        (["x", "--receipt", "1"], "give exactly one of a label"),
        (["--buyer", "0x12"], "is not an address"),
        (["--receipt", "4"], "no token was minted against receipt 4"),
        (["--buyer", "0x" + "ab" * 20], "no token was bought by"),
    ],
)
def test_revoke_takes_one_of_a_label_a_buyer_or_a_receipt(
    tmp_path: Path, args: list[str], message: str
) -> None:
    root = tmp_path / "server"
    _invoke("dataset", "admit", "someone", "--max-version", "1", "--root", str(root))
    result = runner.invoke(app, ["dataset", "revoke", *args, "--root", str(root), "--json"])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_label_with_markup_is_printed_as_typed(tmp_path: Path) -> None:
    root, label = tmp_path / "server", "ops [/] [bold]team"
    admitted = runner.invoke(
        app, ["dataset", "admit", label, "--max-version", "1", "--root", str(root)]
    )
    assert admitted.exit_code == 0, admitted.output  # it used to crash, losing the token
    (line,) = [line for line in admitted.stdout.splitlines() if line.startswith("token for")]
    assert line == f"token for {label} (v1 only), shown once:"
    (record,) = [r for r in _tokens_on_disk(root) if r.get("label") == label]
    token = admitted.stdout.splitlines()[-1].strip()
    assert record["token_sha256"] == hash_token(token)
    revoked = runner.invoke(app, ["dataset", "revoke", label, "--root", str(root)])
    assert revoked.exit_code == 0 and revoked.stdout.strip() == f"revoked {label}"
    bad = runner.invoke(app, ["dataset", "revoke", "--buyer", "[/]", "--root", str(root)])
    assert bad.exit_code == 1 and "'[/]' is not an address" in bad.output


def _tokens_on_disk(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (root / "tokens.json").read_text().splitlines()]


def test_serve_needs_a_public_origin_to_sell_on_every_address(tmp_path: Path) -> None:
    root = tmp_path / "server"
    wildcard = runner.invoke(
        app,
        ["dataset", "serve", "--sell", "--host", "0.0.0.0", "--root", str(root)],  # noqa: S104
    )
    assert wildcard.exit_code == 1
    assert "give --public-origin" in " ".join(wildcard.output.split())
    alone = runner.invoke(
        app, ["dataset", "serve", "--public-origin", "http://h:1", "--root", str(root)]
    )
    assert alone.exit_code == 1 and "it needs --sell" in " ".join(alone.output.split())


def test_a_deeply_nested_body_cannot_crash_the_server(tmp_path: Path) -> None:
    """One unauthenticated ``POST /purchases`` of nested JSON used to kill ``serve``.

    The chain libraries (py_ecc) raise the recursion limit to 100,000, so parsing the
    body recursed past the C stack: a segfault, whether or not the server sells.
    """
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "cotune"), "dataset", "serve", "--root", str(root),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, server)
        nested = httpx.post(
            f"{url}/purchases",
            content=b"[" * 200_000,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert nested.status_code == 404  # it does not sell: the body is not even read
        assert httpx.get(f"{url}/versions").status_code == 404  # nothing published: still up
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
