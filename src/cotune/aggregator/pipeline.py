"""One session through the enclave: fetch, check, decrypt, gate, train, seal, finalize, slash.

Durable checkpoints (:class:`~cotune.aggregator.state.Stage`) hold only public results.
Everything before ``uploaded`` runs in memory (plus a temporary directory for the
adapter files, removed on every exit path) and is simply redone after a crash: training
is deterministic, so the redo gives the same adapter. Every chain write is preceded by
a read of the chain state, so a restart never finalizes or slashes twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotune.aggregator.bindings import (
    eval_set_info,
    model_info,
    model_key_info,
    submission_info,
)
from cotune.aggregator.enclave import DEV_MODE_WARNING, EnclaveKeys
from cotune.aggregator.package import pack_adapter
from cotune.aggregator.spec import canonical, fetch_rules, fetch_spec
from cotune.aggregator.state import Stage, StateStore
from cotune.chain.clients.coordinator import ContributionStatus, SessionInfo, SessionState
from cotune.chain.deployment import Contracts
from cotune.chain.errors import ChainError, RevertError
from cotune.chain.events import Submitted
from cotune.chain.statements import RejectionCertificate
from cotune.crypto.errors import CryptoError
from cotune.crypto.hpke import HpkePrivateKey, HpkePublicKey, seal
from cotune.crypto.stream import encrypt_bytes
from cotune.dataset.provenance import DatasetClaim, ProvenanceError, unwrap_submission
from cotune.storage.base import BlobStore
from cotune.storage.errors import StorageError
from cotune.training.adapter import build_manifest, save_adapter
from cotune.training.base_model import BaseModel, load_base
from cotune.training.data import DatasetValidationError, load_dataset
from cotune.training.evaluate import evaluate
from cotune.training.gate import Decision, Reason, run_gate
from cotune.training.manifest import DatasetRecord
from cotune.training.trainer import StepCallback, balance_sources, detach_lora, train_lora

FAULT_ENV = "COTUNE_FAULT_AT"
"""Crash testing: the process kills itself (SIGKILL) on reaching the named fault point."""

FAULT_POINTS = (
    "fetched",
    "gated",
    "trained",
    "uploaded",
    "finalize-sent",
    "finalized",
    "slash-sent",
    "slashed",
)


def fault_point(name: str) -> None:
    """Die here, as abruptly as a power cut, when ``COTUNE_FAULT_AT`` names this point."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class SessionFailedError(Exception):
    """The session cannot complete (recorded as ``failed``; ``recover`` retries)."""


def plaintext_dir() -> str | None:
    """Where temporary plaintext goes: memory-backed ``/dev/shm`` when there is one."""
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs, not a shared temp path
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@contextlib.contextmanager
def plaintext_workspace() -> Iterator[Path]:
    """A private (mode 0700) temporary directory, removed on every exit path."""
    with tempfile.TemporaryDirectory(prefix="cotune-enclave-", dir=plaintext_dir()) as tmp:
        yield Path(tmp)


@dataclass
class Stopwatch:
    """Seconds per stage, in order."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a block under ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


BaseLoader = Callable[[str], BaseModel]


class BaseModels:
    """Base models loaded once per process, by id."""

    def __init__(self, loader: BaseLoader = load_base) -> None:
        self._loader = loader
        self._loaded: dict[str, BaseModel] = {}

    def __call__(self, model_id: str) -> BaseModel:
        """The base model ``model_id``."""
        if model_id not in self._loaded:
            self._loaded[model_id] = self._loader(model_id)
        return self._loaded[model_id]


class SessionProcessor:
    """Runs sessions of one enclave to completion, resuming from the last checkpoint."""

    def __init__(
        self,
        *,
        contracts: Contracts,
        store: BlobStore,
        keys: EnclaveKeys,
        enclave_id: int,
        measurement: bytes,
        state: StateStore,
        bases: BaseModels | None = None,
        from_block: int = 0,
        on_train_step: StepCallback | None = None,
    ) -> None:
        self.contracts = contracts.as_account(keys.account)
        self.on_train_step = on_train_step
        self.store = store
        self.keys = keys
        self.enclave_id = enclave_id
        self.measurement = measurement
        self.state = state
        self.bases = bases or BaseModels()
        self.from_block = from_block

    @property
    def chain_id(self) -> int:
        """The chain the contracts live on."""
        return self.contracts.coordinator.chain.chain_id

    def log(self, session_id: int, message: str) -> None:
        """Append to the session's log."""
        self.state.log(session_id, message)

    def process(self, session_id: int) -> Stage:
        """Take the session as far as it can go now; returns the stage reached."""
        record = self.state.enqueue(session_id)
        if record.stage in (Stage.DONE, Stage.FAILED):
            return record.stage
        try:
            info = self.contracts.coordinator.session(session_id)
            if info.enclave_id != self.enclave_id:
                raise SessionFailedError(f"session {session_id} runs on enclave {info.enclave_id}")
            if record.stage.rank < Stage.UPLOADED.rank:
                if info.state is not SessionState.TRAINING:
                    return self._not_training(session_id, info)
                self.state.note_attempt(session_id, "started")
                self.state.advance(session_id, Stage.UPLOADED, self._compute(session_id, info))
                fault_point("uploaded")
            if self.state_of(session_id).rank < Stage.FINALIZED.rank:
                self.state.advance(session_id, Stage.FINALIZED, self._finalize(session_id))
                fault_point("finalized")
            if self.state_of(session_id).rank < Stage.SLASHED.rank:
                self.state.advance(session_id, Stage.SLASHED, self._slash(session_id))
                fault_point("slashed")
            self.state.advance(session_id, Stage.DONE)
            self.log(session_id, "session complete")
            return Stage.DONE
        except SessionFailedError as exc:
            self.log(session_id, f"failed: {exc}")
            self.state.fail(session_id, str(exc))
            return Stage.FAILED

    def state_of(self, session_id: int) -> Stage:
        """The session's current checkpoint."""
        record = self.state.get(session_id)
        return record.stage if record else Stage.QUEUED

    def _not_training(self, session_id: int, info: SessionInfo) -> Stage:
        if info.state is SessionState.OPEN:
            return Stage.QUEUED  # not ready: quorum not reached yet
        raise SessionFailedError(f"session {session_id} is {info.state.name}, not Training")

    # ---- compute (in memory) ---------------------------------------------------------------

    def _compute(self, session_id: int, info: SessionInfo) -> dict[str, Any]:
        clock = Stopwatch()
        coordinator = self.contracts.coordinator
        with clock.stage("fetch"):
            try:
                spec = fetch_spec(self.store, info.model_ref)
                rules = fetch_rules(self.store, info.gate_rules_hash)
            except Exception as exc:
                raise SessionFailedError(str(exc)) from exc
            submissions = coordinator.submissions(session_id, self.from_block)
            self.log(session_id, f"fetching {len(submissions)} submissions and the eval set")
            eval_examples = self._eval_set(info)
            readable, unreadable = self._decrypt_all(session_id, submissions)
            readable, claims, false_claims = self._open_envelopes(session_id, readable)
        fault_point("fetched")
        base = self.bases(spec.base_model)
        with clock.stage("gate"):
            self.log(session_id, f"quality gate over {len(readable)} readable contributions")
            report = run_gate(
                base,
                readable,
                eval_examples,
                rules,
                on_progress=lambda who, stage: self.log(session_id, f"gate: {stage} {who}"),
            )
        decisions = (
            report.decisions
            + [
                Decision(who, False, Reason.UNREADABLE, None, 0, {"contributor": who, "error": why})
                for who, why in unreadable.items()
            ]
            + [
                Decision(who, False, Reason.PROVENANCE, None, 0, {"contributor": who, "error": why})
                for who, why in false_claims.items()
            ]
        )
        for d in decisions:
            self.log(session_id, f"gate: {d.contributor} {d.reason.name.lower()} score={d.score}")
        fault_point("gated")
        accepted = report.accepted
        if not accepted:
            raise SessionFailedError("the gate accepted no contribution: nothing to train")
        sources = [report.accepted_examples[d.contributor] for d in accepted]
        examples = (
            balance_sources(sources, spec.hyperparams.seed)
            if spec.balance
            else [e for s in sources for e in s]
        )
        by_contributor = {s.contributor: s for s in submissions}
        with clock.stage("train"):
            self.log(session_id, f"joint training on {len(examples)} examples")
            last_logged = [0.0]

            def on_step(step: int, total: int, loss: float) -> None:
                if self.on_train_step is not None:
                    self.on_train_step(step, total, loss)
                if time.monotonic() - last_logged[0] > 2 or step == total:
                    last_logged[0] = time.monotonic()
                    self.log(session_id, f"train: step {step}/{total} loss {loss:.4f}")

            result = train_lora(base, examples, spec.hyperparams, on_step=on_step)
            try:
                eval_adapter = evaluate(base, eval_examples, model=result.model)
                manifest = build_manifest(
                    base,
                    spec.hyperparams,
                    [
                        DatasetRecord(
                            d.contributor, d.evidence["dataset_sha256"], d.evidence["examples"]
                        )
                        for d in accepted
                    ],
                    steps=result.steps,
                    tokens=result.tokens,
                    eval_base=report.base_eval,
                    eval_adapter=eval_adapter,
                    extra={
                        "session": self._session_fields(session_id),
                        "gate_rules_hash": "0x" + rules.hash().hex(),
                        "accepted": [d.contributor for d in accepted],
                        "rejected": [d.contributor for d in decisions if not d.accepted],
                        "provenance": [
                            {"contributor": d.contributor} | claims[d.contributor].to_dict()
                            for d in accepted
                            if d.contributor in claims
                        ],
                    },
                )
                with plaintext_workspace() as workspace:
                    save_adapter(result.model, workspace / "adapter", manifest)
                    archive = pack_adapter(workspace / "adapter")
            finally:
                detach_lora(result.model)
        fault_point("trained")
        with clock.stage("seal"):
            model_key = HpkePrivateKey.generate()
            ciphertext = encrypt_bytes(
                archive, model_key.public_key(), model_info(self.chain_id, self._coord, session_id)
            )
            sealed = [
                seal(
                    model_key.secret_bytes(),
                    HpkePublicKey.from_bytes(by_contributor[d.contributor].hpke_public_key),
                    model_key_info(self.chain_id, self._coord, session_id, d.contributor),
                )
                for d in accepted
            ]
            del model_key
        with clock.stage("upload"):
            model_ref = self.store.put(io.BytesIO(ciphertext))
            public_report = {
                "format": "cotune-session-report/1",
                "session": self._session_fields(session_id),
                "gate": report.to_dict() | {"decisions": [d.to_dict() for d in decisions]},
                "model_sha256": model_ref.cid,
                "model_size": model_ref.size,
                "adapter_sha256": hashlib.sha256(archive).hexdigest(),
                "manifest": manifest,
                "seconds": clock.seconds,
            }
            manifest_ref = self.store.put(io.BytesIO(canonical(public_report)))
        self.log(session_id, f"adapter encrypted and stored as {model_ref}")
        certificates = [
            self._certificate(session_id, d, by_contributor[d.contributor])
            for d in decisions
            if not d.accepted
        ]
        return {
            "model_cid": model_ref.cid,
            "manifest_cid": manifest_ref.cid,
            "accepted": [d.contributor for d in accepted],
            "weights": [d.weight for d in accepted],
            "sealed_keys": [k.hex() for k in sealed],
            "certificates": certificates,
            "decisions": [d.to_dict() for d in decisions],
            "eval": {"base": report.base_eval.loss, "joint": eval_adapter.loss},
            "seconds": clock.seconds,
            "adapter_sha256": hashlib.sha256(archive).hexdigest(),
        }

    @property
    def _coord(self) -> str:
        return self.contracts.coordinator.address

    def _session_fields(self, session_id: int) -> dict[str, Any]:
        return {
            "id": session_id,
            "chain_id": self.chain_id,
            "coordinator": self._coord,
            "enclave_id": self.enclave_id,
            "measurement": "0x" + self.measurement.hex(),
            "attestation": "dev",
            "warning": DEV_MODE_WARNING,
        }

    def _eval_set(self, info: SessionInfo) -> list[Any]:
        try:
            blob = self.store.get_bytes(self.store.stat(info.eval_set_commitment.hex()))
            plain = self.keys.decrypt(blob, eval_set_info(self.chain_id, self._coord, info.owner))
            return list(load_dataset(plain, "eval set").examples)
        except (StorageError, CryptoError, DatasetValidationError, ValueError) as exc:
            raise SessionFailedError(f"the owner's eval set cannot be used: {exc}") from exc

    def _decrypt_all(
        self, session_id: int, submissions: list[Submitted]
    ) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
        readable: list[tuple[str, bytes]] = []
        unreadable: dict[str, str] = {}
        for sub in submissions:
            info = submission_info(self.chain_id, self._coord, session_id, sub.contributor)
            try:
                blob = self.store.get_bytes(self.store.stat(sub.ciphertext_hash.hex()))
                readable.append((sub.contributor, self.keys.decrypt(blob, info)))
            except (StorageError, CryptoError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                unreadable[sub.contributor] = reason
                self.log(session_id, f"unreadable submission from {sub.contributor}: {reason}")
        return readable, unreadable

    def _open_envelopes(
        self, session_id: int, readable: list[tuple[str, bytes]]
    ) -> tuple[list[tuple[str, bytes]], dict[str, DatasetClaim], dict[str, str]]:
        """Split off each submission's dataset claim and check it against its data."""
        data: list[tuple[str, bytes]] = []
        claims: dict[str, DatasetClaim] = {}
        false_claims: dict[str, str] = {}
        for who, plaintext in readable:
            try:
                payload, found = unwrap_submission(plaintext)
                for claim in found:
                    claim.check(payload)
            except ProvenanceError as exc:
                false_claims[who] = str(exc)
                self.log(session_id, f"dataset claim of {who} refused: {exc}")
                continue
            data.append((who, payload))
            if found:
                claims[who] = found[0]
                entry = found[0].signed.entry
                self.log(session_id, f"{who} submitted {entry.dataset_id} v{entry.version}")
        return data, claims, false_claims

    def _certificate(self, session_id: int, decision: Decision, sub: Submitted) -> dict[str, Any]:
        certificate = RejectionCertificate(
            session_id=session_id,
            contributor=sub.contributor,
            ciphertext_hash=sub.ciphertext_hash,
            reason_code=int(decision.reason),
            score=decision.score_micro,
            evidence_hash=decision.evidence_hash,
        )
        signature = self.keys.sign_rejection(certificate, self.contracts.coordinator.domain())
        return certificate_to_dict(certificate) | {"signature": signature.hex()}

    # ---- chain writes (each after a read) ---------------------------------------------------

    def _finalize(self, session_id: int) -> dict[str, Any]:
        result = self._result(session_id)
        model_hash = bytes.fromhex(result["model_cid"])
        info = self.contracts.coordinator.session(session_id)
        if info.state is SessionState.FINALIZED:
            if info.model_hash != model_hash:
                raise SessionFailedError("the session was finalized with another model")
            self.log(session_id, "already finalized on chain")
            return {}
        if info.state is not SessionState.TRAINING:
            raise SessionFailedError(f"session {session_id} is {info.state.name}, cannot finalize")
        try:
            tx = self.contracts.coordinator.finalize(
                session_id,
                model_hash,
                bytes.fromhex(result["manifest_cid"]),
                result["accepted"],
                result["weights"],
                [bytes.fromhex(k) for k in result["sealed_keys"]],
            )
        except RevertError as exc:
            raise SessionFailedError(f"finalize reverted: {exc}") from exc
        self.log(session_id, f"finalized in {tx.tx_hash} ({tx.gas_used} gas)")
        fault_point("finalize-sent")
        return {"finalize_tx": tx.tx_hash, "gas": result.get("gas", {}) | {"finalize": tx.gas_used}}

    def _slash(self, session_id: int) -> dict[str, Any]:
        result = self._result(session_id)
        gas = dict(result.get("gas", {}))
        slashed = list(result.get("slashed", []))
        coordinator = self.contracts.coordinator
        for raw in result["certificates"]:
            certificate = certificate_from_dict(raw)
            status = coordinator.contribution(session_id, certificate.contributor).status
            if status is not ContributionStatus.SUBMITTED:
                continue  # slashed already, refunded, or never accepted as a submission
            try:
                tx = coordinator.slash_with_proof(certificate, bytes.fromhex(raw["signature"]))
            except (RevertError, ChainError) as exc:
                self.log(session_id, f"slash of {certificate.contributor} not sent: {exc}")
                continue
            gas[f"slash:{certificate.contributor}"] = tx.gas_used
            slashed.append(certificate.contributor)
            fault_point("slash-sent")
            self.log(session_id, f"slashed {certificate.contributor} in {tx.tx_hash}")
        return {"gas": gas, "slashed": slashed}

    def _result(self, session_id: int) -> dict[str, Any]:
        record = self.state.get(session_id)
        assert record is not None
        return record.result


def certificate_to_dict(certificate: RejectionCertificate) -> dict[str, Any]:
    """A rejection certificate as JSON (hex bytes)."""
    return {
        "session_id": certificate.session_id,
        "contributor": certificate.contributor,
        "ciphertext_hash": certificate.ciphertext_hash.hex(),
        "reason_code": certificate.reason_code,
        "score": certificate.score,
        "evidence_hash": certificate.evidence_hash.hex(),
    }


def certificate_from_dict(raw: dict[str, Any]) -> RejectionCertificate:
    """The inverse of :func:`certificate_to_dict`."""
    return RejectionCertificate(
        session_id=int(raw["session_id"]),
        contributor=str(raw["contributor"]),
        ciphertext_hash=bytes.fromhex(raw["ciphertext_hash"]),
        reason_code=int(raw["reason_code"]),
        score=int(raw["score"]),
        evidence_hash=bytes.fromhex(raw["evidence_hash"]),
    )
