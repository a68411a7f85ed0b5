"""``verify_provenance``: from an adapter directory back to the chain and to the data's publishers.

The chain of evidence, each link one :class:`Check`:

``session``
    The adapter's ``cotune.json`` names a session on this chain's Coordinator, and the
    session is finalized.
``adapter``
    The public session report the chain commits to (its SHA-256 is the session's
    ``manifestHash``) holds this very ``cotune.json``, and the SHA-256 of the adapter's
    files (as the enclave packed them) is the report's ``adapter_sha256``.
``tokens``
    The ModelNFT records the session's model and manifest hashes; one token per accepted
    contributor, with its holder.
``contributions``
    Every contributor ``cotune.json`` lists as accepted is accepted on chain, and no
    one else.
``dataset``
    Each dataset claim the enclave recorded is signed by its publisher (EIP-712), names
    an accepted contributor, and its artifact SHA-256 is the data the enclave trained
    on for that contributor.

Offline (no chain), only the ``dataset`` links are checked, from ``cotune.json`` alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotune.aggregator.package import pack_adapter
from cotune.chain.clients.coordinator import ContributionStatus, SessionState
from cotune.chain.connection import Chain
from cotune.chain.deployment import Contracts, Deployment
from cotune.common import jsonsafe
from cotune.dataset.provenance import DatasetClaim, ProvenanceError
from cotune.storage.base import BlobStore
from cotune.training.manifest import MANIFEST_NAME


@dataclass(frozen=True)
class Check:
    """One link of the evidence chain and whether it holds."""

    link: str
    ok: bool
    detail: str


@dataclass
class ProvenanceReport:
    """What :func:`verify_provenance` found."""

    adapter_dir: Path
    session_id: int
    checks: list[Check] = field(default_factory=list)
    tokens: list[tuple[int, str]] = field(default_factory=list)
    """(token id, holder) of each model token of the session (empty offline)."""
    datasets: list[dict[str, Any]] = field(default_factory=list)
    """One entry per dataset claim: contributor, dataset id, version, publisher, hashes."""

    @property
    def ok(self) -> bool:
        """Whether every check holds."""
        return all(c.ok for c in self.checks)

    def add(self, link: str, ok: bool, detail: str) -> None:
        """Record one check."""
        self.checks.append(Check(link, ok, detail))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "adapter_dir": str(self.adapter_dir),
            "session_id": self.session_id,
            "ok": self.ok,
            "checks": [{"link": c.link, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "tokens": [{"token_id": t, "holder": h} for t, h in self.tokens],
            "datasets": self.datasets,
        }


def read_manifest(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's ``cotune.json``; ``ProvenanceError`` when it is missing or not a session's."""
    path = Path(adapter_dir) / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProvenanceError(f"{path} does not exist: is {adapter_dir} an adapter?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProvenanceError(f"{path} is not JSON: {exc}") from None
    manifest: dict[str, Any] = raw if isinstance(raw, dict) else {}
    session = manifest.get("session")
    if not isinstance(session, dict) or not isinstance(session.get("id"), int):
        raise ProvenanceError(f"{path} names no session: this adapter was not trained by cotune")
    return manifest


def verify_provenance(
    adapter_dir: Path,
    online: tuple[Chain, Deployment, BlobStore] | None = None,
) -> ProvenanceReport:
    """Check every link from ``adapter_dir`` to the chain (``online``) and to the publishers."""
    adapter_dir = Path(adapter_dir)
    manifest = read_manifest(adapter_dir)
    report = ProvenanceReport(adapter_dir, manifest["session"]["id"])
    if online is not None:
        _check_chain(report, manifest, *online)
    _check_datasets(report, manifest)
    return report


def _check_chain(
    report: ProvenanceReport,
    manifest: dict[str, Any],
    chain: Chain,
    deployment: Deployment,
    storage: BlobStore,
) -> None:
    sid, named = report.session_id, manifest["session"]
    where = (named.get("chain_id"), str(named.get("coordinator", "")).lower())
    if where != (chain.chain_id, deployment.coordinator.lower()):
        report.add(
            "session",
            False,
            f"the adapter is from chain {where[0]}'s Coordinator {named.get('coordinator')}, "
            f"not chain {chain.chain_id}'s {deployment.coordinator}",
        )
        return
    contracts = Contracts.at(chain, deployment)
    info = contracts.coordinator.session(sid)
    finalized = info.state is SessionState.FINALIZED
    report.add(
        "session", finalized, f"session {sid} on chain {chain.chain_id} is {info.state.name}"
    )
    if not finalized:
        return
    public = jsonsafe.loads(storage.get_bytes(storage.stat(info.manifest_hash.hex())))
    same_manifest = public.get("manifest") == manifest
    report.add(
        "adapter",
        same_manifest,
        "cotune.json is the one in the report the chain commits to"
        if same_manifest
        else "cotune.json differs from the manifest in the session's committed report",
    )
    packed = hashlib.sha256(pack_adapter(report.adapter_dir)).hexdigest()
    same_files = public.get("adapter_sha256") == packed
    report.add(
        "adapter",
        same_files,
        f"the adapter files hash to the report's adapter_sha256 ({packed[:16]}…)"
        if same_files
        else f"the adapter files hash to {packed}, the report says {public.get('adapter_sha256')}",
    )
    nft = contracts.model_nft
    record = nft.session_model(sid)
    recorded = (record.model_hash, record.manifest_hash) == (info.model_hash, info.manifest_hash)
    report.tokens = [
        (token, nft.owner_of(token))
        for token in (nft.token_id_for(sid, i) for i in range(info.accepted_count))
    ]
    report.add(
        "tokens",
        recorded,
        f"{len(report.tokens)} model tokens stand for model 0x{info.model_hash.hex()[:16]}…"
        if recorded
        else "the ModelNFT records another model or manifest for this session",
    )
    accepted = list(manifest.get("accepted", []))
    not_accepted = [
        who
        for who in accepted
        if contracts.coordinator.contribution(sid, who).status is not ContributionStatus.ACCEPTED
    ]
    agree = not not_accepted and len(accepted) == info.accepted_count
    report.add(
        "contributions",
        agree,
        f"the {len(accepted)} accepted contributors are accepted on chain"
        if agree
        else f"on chain, {info.accepted_count} are accepted; not accepted there: {not_accepted}",
    )


def _check_datasets(report: ProvenanceReport, manifest: dict[str, Any]) -> None:
    accepted = set(manifest.get("accepted", []))
    trained_on = {d.get("name"): d.get("sha256") for d in manifest.get("datasets", [])}
    for raw in manifest.get("provenance", []):
        contributor = raw.get("contributor") if isinstance(raw, dict) else None
        try:
            claim = DatasetClaim.from_dict({k: v for k, v in raw.items() if k != "contributor"})
            claim.verify_signature()
        except ProvenanceError as exc:
            report.add("dataset", False, f"{contributor}: {exc}")
            continue
        entry = claim.signed.entry
        report.datasets.append(
            {
                "contributor": contributor,
                "dataset_id": entry.dataset_id,
                "version": entry.version,
                "publisher": entry.publisher,
                "manifest_hash": "0x" + entry.manifest_hash.hex(),
                "artifact_sha256": entry.artifact_sha256.hex(),
            }
        )
        problems = []
        if contributor not in accepted:
            problems.append(f"{contributor} is not an accepted contributor")
        if trained_on.get(contributor) != entry.artifact_sha256.hex():
            problems.append("its artifact is not the data the enclave trained on")
        report.add(
            "dataset",
            not problems,
            f"{claim.name} signed by publisher {entry.publisher}, submitted by {contributor}"
            + (": " + "; ".join(problems) if problems else ""),
        )


__all__ = ["Check", "ProvenanceReport", "read_manifest", "verify_provenance"]
