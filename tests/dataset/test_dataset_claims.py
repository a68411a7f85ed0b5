"""Dataset claims: the submission envelope, claim checks and ``--dataset`` references."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from cotune.common.serving import serve_in_background
from cotune.dataset.bundle import init_bundle, update_bundle
from cotune.dataset.provenance import (
    SUBMISSION_MAGIC,
    DatasetClaim,
    ProvenanceError,
    Submission,
    resolve_dataset,
    unwrap_submission,
    wrap_submission,
)
from cotune.dataset.server import create_dataset_app, publish_version
from cotune.dataset.tokens import TokenStore
from cotune.dataset.versions import VERSION_LOG_NAME, VersionLog, dataset_domain
from cotune.training.data import write_jsonl

PUBLISHER = Account.create()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with v1 and v2 (the head), published to ``<tmp>/serve`` too."""
    tmp = tmp_path_factory.mktemp("provenance")
    directory = tmp / "bundle"
    log = VersionLog.open(directory / VERSION_LOG_NAME)
    for version in (1, 2):
        source = tmp / f"v{version}.jsonl"
        write_jsonl(source, [{"text": f"v{version} line {i}"} for i in range(20)])
        made = (
            init_bundle(
                directory, source, dataset_id="notes", name="Notes", created_by=PUBLISHER.address
            )
            if version == 1
            else update_bundle(directory, source)
        )
        log.append(made, PUBLISHER)
        publish_version(tmp / "serve", directory)
    return directory


@pytest.fixture(scope="module")
def server_url(bundle: Path) -> Iterator[str]:
    root = bundle.parent / "serve"
    running = serve_in_background(create_dataset_app(root, TokenStore(root / "tokens.json")))
    try:
        yield f"http://127.0.0.1:{running.port}"
    finally:
        running.stop()


def test_a_bundle_reference_at_its_head_gives_the_artifact(bundle: Path) -> None:
    claim, artifact = resolve_dataset(f"{bundle}@2")
    assert artifact is not None and claim.signed.entry.version == 2
    claim.check(artifact.read_bytes())
    older, no_artifact = resolve_dataset(f"{bundle}@1")
    assert older.signed.entry.version == 1 and no_artifact is None  # only the head is kept
    with pytest.raises(ProvenanceError, match="is not the signed artifact"):
        older.check(artifact.read_bytes())


def test_a_url_reference_fetches_and_verifies_the_log(bundle: Path, server_url: str) -> None:
    claim, artifact = resolve_dataset(f"{server_url}@1")
    local, _ = resolve_dataset(f"{bundle}@1")
    assert artifact is None and claim == local


@pytest.mark.parametrize(
    ("reference", "message"),
    [("nothing-here", "expected BUNDLE_DIR@VERSION"), ("x@", "expected"), ("x@v1", "expected")],
)
def test_malformed_references(reference: str, message: str) -> None:
    with pytest.raises(ProvenanceError, match=message):
        resolve_dataset(reference)


def test_an_unknown_version_is_named(bundle: Path) -> None:
    with pytest.raises(ProvenanceError, match=r"the log has versions \[1, 2\]"):
        resolve_dataset(f"{bundle}@3")


def test_a_claim_signed_by_another_key_fails(bundle: Path) -> None:
    claim, artifact = resolve_dataset(f"{bundle}@2")
    assert artifact is not None
    impostor = Account.create()
    forged = replace(
        claim.signed,
        signature=replace(claim.signed.entry, publisher=impostor.address).sign(impostor).signature,
    )
    with pytest.raises(ProvenanceError, match="but the entry names publisher"):
        DatasetClaim(forged).check(artifact.read_bytes())
    other_domain = DatasetClaim(claim.signed, dataset_domain(1, "0x" + "22" * 20))
    with pytest.raises(ProvenanceError):  # the signature is for the offline domain
        other_domain.verify_signature()


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000))
def test_envelope_round_trip(bundle: Path, data: bytes) -> None:
    claim, _ = resolve_dataset(f"{bundle}@2")
    assert unwrap_submission(wrap_submission(data, [claim])) == Submission(data, [claim])
    salt = bytes(range(32))
    salted = unwrap_submission(wrap_submission(data, [claim], salt=salt))
    assert salted == Submission(data, [claim], salt)
    assert unwrap_submission(wrap_submission(data, [], salt=salt)) == Submission(data, [], salt)
    if not data.startswith(SUBMISSION_MAGIC):
        assert unwrap_submission(wrap_submission(data, [])) == Submission(data, [])


@settings(max_examples=100, deadline=None)
@given(header=st.binary(max_size=300))
def test_any_broken_header_is_a_provenance_error(header: bytes) -> None:
    try:
        opened = unwrap_submission(SUBMISSION_MAGIC + header)
    except ProvenanceError:
        return
    assert len(opened.claims) <= 1 and isinstance(opened.data, bytes)


def test_header_errors_are_specific(bundle: Path) -> None:
    claim, _ = resolve_dataset(f"{bundle}@2")
    cases = [
        (b"no end", "has no end"),
        (b"{oops\n", "not JSON"),
        (b'{"other": 1}\n', "the members 'provenance' and"),
        (b'{"provenance": [1, 2]}\n', "at most one dataset claim"),
        (b'{"provenance": [], "commitment_salt": "00"}\n', "64 lowercase hex digits"),
        (b'{"provenance": [], "n": ' + b"9" * 5000 + b"}\n", "not JSON"),
        (b'{"provenance": [{"version": ' + b"9" * 5000 + b"}]}\n", "not JSON"),
        (b"[" * 60_000 + b"\n", "nested more than 64 levels"),
        (b'{"provenance": [{"version": 1}]}\n', "'domain' member"),
        (
            json.dumps({"provenance": [claim.to_dict() | {"version": "2"}]}).encode() + b"\n",
            "malformed dataset claim",
        ),
    ]
    for header, message in cases:
        with pytest.raises(ProvenanceError, match=message):
            unwrap_submission(SUBMISSION_MAGIC + header + b"data")
