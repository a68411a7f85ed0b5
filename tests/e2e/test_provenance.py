"""Dataset provenance end to end, from a signed version into the adapter and back.

A signed dataset version goes into a session and comes back out of the adapter,
verifiable from the model tokens down to the publisher's key.

One session on the embedded chain: one contributor submits a published dataset version
with its claim, one submits plain data, and two send false claims (data that is not the
signed artifact; an entry signed by someone other than its publisher) straight to the
contract. The false claims are rejected as ``provenance`` and slashed; the adapter's
``cotune.json`` records the true claim; ``verify_provenance`` holds online and offline,
and fails on a changed ``cotune.json``, changed weights or a changed claim.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from typer.testing import CliRunner

from cotune.cli.app import app
from cotune.dataset.bundle import init_bundle, load_bundle
from cotune.dataset.provenance import (
    DatasetClaim,
    ProvenanceError,
    resolve_dataset,
    wrap_submission,
)
from cotune.dataset.versions import VERSION_LOG_NAME, VersionLog
from cotune.sdk.provenance import verify_provenance
from cotune.training.gate import GateRules, Reason, probe_sample_seed

PUBLISHER = Account.create()


@dataclass
class Outcome:
    session: Any
    honest: Any
    plain: Any
    copier: Any
    claim: DatasetClaim
    plain_data: bytes
    adapter: Path


@pytest.fixture(scope="module")
def outcome(
    env: Any, clean_files: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> Outcome:
    work = tmp_path_factory.mktemp("provenance")
    source = work / "notes.jsonl"
    source.write_bytes(clean_files[0])
    bundle = work / "bundle"
    init_bundle(
        bundle, source, dataset_id="clinic-notes", name="Notes", created_by=PUBLISHER.address
    )
    VersionLog.open(bundle / VERSION_LOG_NAME).append(load_bundle(bundle), PUBLISHER)
    claim, artifact = resolve_dataset(f"{bundle}@1")
    assert artifact is not None and artifact.read_bytes() == clean_files[0]

    session = env.open_session(5)
    honest, plain, mismatched, forged, copier = session.parties
    files_before = env.store_files()
    with pytest.raises(ProvenanceError, match="is not the signed artifact"):
        honest.client.submit(session.session_id, clean_files[1], dataset=claim)
    assert env.store_files() == files_before  # refused before anything was uploaded
    honest.client.submit(
        session.session_id, artifact, pinned_measurement=env.measurement, dataset=claim
    )
    session.submit_clean(plain, clean_files[1])
    # Straight to the contract: a true claim wrapped around other data ...
    session.upload_and_commit(
        mismatched, session.encrypt(mismatched, wrap_submission(clean_files[2], [claim]))
    )
    # ... and an entry naming the publisher but signed by another key.
    impostor = Account.create()
    fake = replace(
        claim.signed,
        signature=replace(claim.signed.entry, publisher=impostor.address)
        .sign(impostor, claim.domain)
        .signature,
    )
    session.upload_and_commit(
        forged,
        session.encrypt(
            forged, wrap_submission(clean_files[0], [DatasetClaim(fake, claim.domain)])
        ),
    )
    # A true claim on the very dataset the honest one submitted first: a copy.
    copier.client.submit(
        session.session_id, artifact, pinned_measurement=env.measurement, dataset=claim
    )
    session.run()
    adapters = session.assert_outcome(
        {
            mismatched.address: Reason.PROVENANCE,
            forged.address: Reason.PROVENANCE,
            copier.address: Reason.CROSS_DUPLICATES,
        },
        work / "downloads",
        unslashed=[copier.address],  # first to commit a public dataset is not its owner
    )
    return Outcome(session, honest, plain, copier, claim, clean_files[1], adapters[honest.address])


def test_false_claims_are_rejected_with_their_reason(outcome: Outcome) -> None:
    decisions = outcome.session.decisions()
    errors = {d["evidence"]["error"] for d in decisions.values() if d["reason"] == "provenance"}
    assert any("is not the signed artifact" in e for e in errors), errors
    assert any("but the entry names publisher" in e for e in errors), errors


def test_cotune_json_records_the_claim(outcome: Outcome) -> None:
    manifest = json.loads((outcome.adapter / "cotune.json").read_text())
    assert manifest["provenance"] == [
        {"contributor": outcome.honest.address} | outcome.claim.to_dict()
    ]
    trained = {d["name"]: d.get("sha256") for d in manifest["datasets"]}
    assert trained[outcome.honest.address] == outcome.claim.signed.entry.artifact_sha256.hex()


def test_verify_provenance_online(outcome: Outcome, env: Any) -> None:
    report = verify_provenance(outcome.adapter, (env.chain, env.deployment, env.store))
    assert report.ok, report.checks
    assert [c.link for c in report.checks] == [
        "session",
        "adapter",
        "adapter",
        "tokens",
        "contributions",
        "dataset",
    ]
    holders = {holder for _, holder in report.tokens}
    assert holders == {outcome.honest.address, outcome.plain.address}
    assert report.datasets == [
        {
            "contributor": outcome.honest.address,
            "dataset_id": "clinic-notes",
            "version": 1,
            "publisher": PUBLISHER.address,
            "manifest_hash": "0x" + outcome.claim.signed.entry.manifest_hash.hex(),
            "artifact_sha256": outcome.claim.signed.entry.artifact_sha256.hex(),
        }
    ]


def _copy(adapter: Path, tmp_path: Path) -> Path:
    target = tmp_path / "adapter"
    shutil.copytree(adapter, target)
    return target


def _failed(report: Any) -> set[str]:
    return {c.link for c in report.checks if not c.ok}


def test_verify_provenance_catches_changes(outcome: Outcome, env: Any, tmp_path: Path) -> None:
    online = (env.chain, env.deployment, env.store)
    weights = _copy(outcome.adapter, tmp_path / "w")
    data = bytearray((weights / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (weights / "adapter_model.safetensors").write_bytes(bytes(data))
    report = verify_provenance(weights, online)
    assert _failed(report) == {"adapter"}
    assert [c.ok for c in report.checks if c.link == "adapter"] == [True, False]

    edited = _copy(outcome.adapter, tmp_path / "m")
    manifest = json.loads((edited / "cotune.json").read_text())
    manifest["provenance"][0]["version"] = 2  # claim another version: the signature breaks
    (edited / "cotune.json").write_text(json.dumps(manifest))
    assert _failed(verify_provenance(edited, online)) == {"adapter", "dataset"}
    assert _failed(verify_provenance(edited)) == {"dataset"}  # offline sees the signature


def test_provenance_cli_offline(outcome: Outcome) -> None:
    result = CliRunner().invoke(app, ["provenance", str(outcome.adapter), "--offline", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["ok"] and payload["datasets"][0]["publisher"] == PUBLISHER.address
    assert [c["link"] for c in payload["checks"]] == ["dataset"]


def test_a_claim_is_logged_only_once_the_gate_accepts_it(outcome: Outcome, env: Any) -> None:
    logs = [line.message for line in env.aggregator.state.logs(outcome.session.session_id)]
    contributed = [m for m in logs if m.endswith("contributed clinic-notes v1")]
    assert contributed == [f"{outcome.honest.address} contributed clinic-notes v1"]
    assert not any(outcome.copier.address in m and "clinic-notes" in m for m in logs)


def test_reports_carry_salted_commitments_not_hashes(outcome: Outcome, env: Any) -> None:
    session_id = outcome.session.session_id
    manifest = json.loads((outcome.adapter / "cotune.json").read_text())
    records = {d["name"]: d for d in manifest["datasets"]}
    plain = records[outcome.plain.address]
    assert "sha256" not in plain  # no claim: its hash is nobody's business
    assert plain["commitment"] == outcome.plain.client.dataset_commitment(
        session_id, outcome.plain_data
    )
    assert plain["commitment"] != outcome.honest.client.dataset_commitment(
        session_id, outcome.plain_data
    )  # the salt is the contributor's own
    report = json.dumps(env.owner.report(session_id)) + json.dumps(outcome.session.record().result)
    assert hashlib.sha256(outcome.plain_data).hexdigest() not in report
    decisions = outcome.session.decisions()
    assert decisions[outcome.plain.address]["evidence"]["dataset_commitment"] == plain["commitment"]


def test_nothing_public_confirms_a_guess_of_anyones_data(outcome: Outcome, env: Any) -> None:
    """Neither the probe seed (enclave-derived) nor an error names a plain data hash."""
    session_id = outcome.session.session_id
    decisions = outcome.session.decisions()
    seeds = {d["evidence"].get("probe_sample_seed") for d in decisions.values()} - {None}
    assert len(seeds) == 1
    # The public recipe over the data's plain hashes does not give the enclave's seed.
    assert probe_sample_seed(GateRules(), [outcome.plain_data]) not in seeds
    public = json.dumps(env.owner.report(session_id))
    logs = " ".join(line.message for line in env.aggregator.state.logs(session_id))
    assert hashlib.sha256(outcome.plain_data).hexdigest() not in public + logs
    # A claimed artifact's hash is public by the claim's design.
    assert outcome.claim.signed.entry.artifact_sha256.hex() in public
    errors = [str(d["evidence"].get("error")) for d in decisions.values()]
    mismatched = [e for e in errors if "is not the signed artifact" in e]
    assert mismatched and all("submitted data (" not in e for e in mismatched)
