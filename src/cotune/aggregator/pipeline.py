"""One session through the enclave: fetch, check, decrypt, gate, train, seal, finalize, slash.

Durable checkpoints (:class:`~cotune.aggregator.state.Stage`) hold only public results.
Everything before ``uploaded`` runs in memory (plus a temporary directory for the
adapter files, removed on every exit path) and is simply redone after a crash: training
is deterministic, so the redo gives the same adapter. Every chain write is preceded by
a read of the chain state, so a restart never finalizes or slashes twice.

Before any work the session's worst case is checked against the operator's limits
(:mod:`cotune.aggregator.limits`); each contribution is taken in on its own, so one bad
submission rejects its author and nobody else (:mod:`cotune.aggregator.intake`); the
training deadline and the operator's time budget are checked before every stage and
after every training step (:mod:`cotune.aggregator.budget`); a session is given up after
``MAX_ATTEMPTS`` starts that did not finish, a SIGKILL included.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cotune.aggregator.bindings import (
    eval_set_info,
    model_info,
    model_key_info,
    probe_seed_info,
)
from cotune.aggregator.budget import SessionBudget
from cotune.aggregator.enclave import DEV_MODE_WARNING, EnclaveKeys
from cotune.aggregator.faults import (
    InfrastructureError,
    SessionFailedError,
    is_infrastructure_fault,
)
from cotune.aggregator.intake import Intake, Opened, Refused
from cotune.aggregator.limits import OperatorLimits, max_ciphertext_bytes, over_limits
from cotune.aggregator.package import pack_adapter
from cotune.aggregator.spec import SessionSpec, SpecError, canonical, fetch_rules, fetch_spec
from cotune.aggregator.state import Stage, StateStore
from cotune.aggregator.workspace import plaintext_workspace
from cotune.chain.clients.coordinator import ContributionStatus, SessionInfo, SessionState
from cotune.chain.deployment import Contracts
from cotune.chain.errors import RevertError
from cotune.chain.events import Submitted
from cotune.chain.statements import RejectionCertificate
from cotune.crypto.errors import CryptoError
from cotune.crypto.hpke import HpkePrivateKey, seal
from cotune.crypto.stream import encrypt_bytes
from cotune.storage.base import BlobStore
from cotune.storage.errors import StorageError
from cotune.training.accuracy import task_accuracy
from cotune.training.adapter import build_manifest, save_adapter
from cotune.training.base_model import BaseModel, load_base
from cotune.training.data import DatasetValidationError, Example, load_dataset
from cotune.training.evaluate import evaluate
from cotune.training.gate import Decision, EvalSetError, GateReport, run_gate
from cotune.training.manifest import DatasetRecord
from cotune.training.rules import GateRules, Reason
from cotune.training.trainer import StepCallback, balance_sources, detach_lora, train_encoded

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


MAX_SCORED_PROMPTS = 512
"""Eval prompts whose greedy replies are scored for the report's task accuracy (bounded,
as the eval set may hold up to the rules' ``max_examples``)."""
MAX_ATTEMPTS = 5
"""Starts of a session's compute that may end without an answer (an error, or the process
killed under it) before the session is given up; storage and chain outages do not count."""


def fault_point(name: str) -> None:
    """Die here, as abruptly as a power cut, when ``COTUNE_FAULT_AT`` names this point."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


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


@dataclass(frozen=True)
class _Run:
    """What the stages of one session's compute share."""

    session_id: int
    spec: SessionSpec
    rules: GateRules
    budget: SessionBudget
    eval_examples: list[Example]
    base: BaseModel


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
        workspace_root: Path,
        limits: OperatorLimits | None = None,
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
        self.workspace_root = workspace_root
        self.limits = limits or OperatorLimits()
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
        """Take the session as far as it can go now; returns the stage reached.

        ``SessionFailedError`` ends the session as ``failed``; any other exception
        propagates for the caller to retry later (an outage of storage or the chain).
        """
        record = self.state.enqueue(session_id)
        if record.stage in (Stage.DONE, Stage.FAILED):
            return record.stage
        try:
            info = self.contracts.coordinator.session(session_id)
            if info.enclave_id != self.enclave_id:
                raise SessionFailedError(f"session {session_id} runs on enclave {info.enclave_id}")
            chain_time = self.contracts.coordinator.chain.timestamp()
            if info.state is SessionState.TRAINING and chain_time > info.training_deadline:
                last = f" (the last error: {record.error})" if record.error else ""
                raise SessionFailedError(
                    f"the training deadline passed before session {session_id} finished{last}"
                )
            if record.stage.rank < Stage.UPLOADED.rank:
                if info.state is not SessionState.TRAINING:
                    return self._not_training(session_id, info)
                if record.attempts >= MAX_ATTEMPTS:
                    last = record.error or "the aggregator stopped while running it"
                    raise SessionFailedError(
                        f"gave up after {record.attempts} attempts that did not finish "
                        f"(the last: {last})"
                    )
                self.state.note_attempt(session_id, "started")  # before the work: a kill counts
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

    def _budget(self, info: SessionInfo) -> SessionBudget:
        """The session's time budget, with the chain's clock mapped onto this machine's.

        A dev chain's clock may run ahead of the wall clock (time travel); a real chain's
        lags it by a block at most. The deadline is met by whichever is later.
        """
        ahead = max(0.0, self.contracts.coordinator.chain.timestamp() - time.time())
        return SessionBudget(
            info.training_deadline - ahead, max_seconds=self.limits.max_session_seconds
        )

    # ---- compute (in memory) ---------------------------------------------------------------

    def _compute(self, session_id: int, info: SessionInfo) -> dict[str, Any]:
        clock = Stopwatch()
        coordinator = self.contracts.coordinator
        budget = self._budget(info)
        budget.check("start")
        with clock.stage("fetch"):
            spec, rules = self._committed(info)
            submissions = coordinator.submissions(session_id, self.from_block)
            problems = over_limits(spec, rules, len(submissions), self.limits)
            if problems:
                raise SessionFailedError(
                    "refused: the session asks for more than this aggregator allows: "
                    + "; ".join(problems)
                )
            self.log(session_id, f"fetching {len(submissions)} submissions and the eval set")
            eval_examples = self._eval_set(info, rules)
            opened, refused = self._take_in(session_id, submissions, rules, budget)
        fault_point("fetched")
        run = _Run(session_id, spec, rules, budget, eval_examples, self.bases(spec.base_model))
        with clock.stage("gate"):
            report, decisions = self._gate(run, opened, refused)
        opened = [replace(o, data=b"") for o in opened]  # the gate holds what it accepted
        fault_point("gated")
        accepted = report.accepted
        if not accepted:
            raise SessionFailedError("the gate accepted no contribution: nothing to train")
        by_contributor = {o.contributor: o for o in opened}
        for d in accepted:
            claim = by_contributor[d.contributor].claim
            if claim is not None:
                self.log(session_id, f"{d.contributor} contributed {claim.name}")
        with clock.stage("train"):
            archive, manifest, evals = self._train(run, report, decisions, by_contributor)
        fault_point("trained")
        budget.check("seal")
        with clock.stage("seal"):
            model_key = HpkePrivateKey.generate()
            ciphertext = encrypt_bytes(
                archive, model_key.public_key(), model_info(self.chain_id, self._coord, session_id)
            )
            sealed = [
                seal(
                    model_key.secret_bytes(),
                    by_contributor[d.contributor].hpke_key,
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
        submitted = {s.contributor: s for s in submissions}
        certificates = [
            self._certificate(session_id, d, submitted[d.contributor])
            for d in decisions
            if not d.accepted and _slashable(d)
        ]
        return {
            "model_cid": model_ref.cid,
            "manifest_cid": manifest_ref.cid,
            "accepted": [d.contributor for d in accepted],
            "weights": [d.weight for d in accepted],
            "sealed_keys": [k.hex() for k in sealed],
            "certificates": certificates,
            "decisions": [d.to_dict() for d in decisions],
            "eval": {"base": evals["base"]["loss"], "joint": evals["joint"]["loss"]},
            "task_accuracy": {name: e["task_accuracy"]["accuracy"] for name, e in evals.items()},
            "seconds": clock.seconds,
            "adapter_sha256": hashlib.sha256(archive).hexdigest(),
        }

    def _take_in(
        self,
        session_id: int,
        submissions: list[Submitted],
        rules: GateRules,
        budget: SessionBudget,
    ) -> tuple[list[Opened], list[Refused]]:
        """Open every submission on its own; a bad one rejects its author alone."""
        intake = Intake(
            self.store,
            self.keys,
            chain_id=self.chain_id,
            coordinator=self._coord,
            session_id=session_id,
            rules=rules,
        )
        opened: list[Opened] = []
        refused: list[Refused] = []
        for submission in submissions:
            budget.check("fetch")
            taken = intake.take(submission)
            if isinstance(taken, Refused):
                refused.append(taken)
                self.log(
                    session_id,
                    f"submission of {taken.contributor} refused "
                    f"({taken.reason.name.lower()}): {taken.error}",
                )
            else:
                opened.append(taken)
        return opened, refused

    def _gate(
        self, run: _Run, opened: list[Opened], refused: list[Refused]
    ) -> tuple[GateReport, list[Decision]]:
        """The quality gate over what opened, and every decision (the refused included)."""
        session_id = run.session_id
        self.log(session_id, f"quality gate over {len(opened)} readable contributions")
        commitments = {o.contributor: o.commitment for o in opened}

        def on_progress(who: str, stage: str) -> None:
            run.budget.check("gate")
            self.log(session_id, f"gate: {stage} {who}")

        seed_info = probe_seed_info(
            self.chain_id, self._coord, session_id, run.rules.seed, list(commitments.values())
        )
        try:
            report = run_gate(
                run.base,
                [(o.contributor, o.data) for o in opened],
                run.eval_examples,
                run.rules,
                on_progress=on_progress,
                seq_len=run.spec.hyperparams.seq_len,
                commitment=lambda who, _data: commitments[who],
                sample_seed="0x" + self.keys.derive_salt(seed_info).hex(),
            )
        except EvalSetError as exc:
            raise SessionFailedError(f"the owner's eval set cannot be used: {exc}") from exc
        decisions = report.decisions + [
            Decision(r.contributor, False, r.reason, None, 0,
                     {"contributor": r.contributor, "error": r.error, "slashable": r.slash})
            for r in refused
        ]  # fmt: skip
        for d in decisions:
            self.log(session_id, f"gate: {d.contributor} {d.reason.name.lower()} score={d.score}")
        return report, decisions

    def _train(
        self,
        run: _Run,
        report: GateReport,
        decisions: list[Decision],
        opened: dict[str, Opened],
    ) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
        """Joint training on the accepted data; the packed adapter, its manifest, the evals."""
        session_id, base, spec = run.session_id, run.base, run.spec
        accepted = report.accepted
        sources = [report.accepted_encoded[d.contributor] for d in accepted]
        encoded = (
            balance_sources(sources, spec.hyperparams.seed)
            if spec.balance
            else [e for s in sources for e in s]
        )
        self.log(session_id, f"joint training on {len(encoded)} examples")
        last_logged = [0.0]

        def on_step(step: int, total: int, loss: float) -> None:
            run.budget.check("train")
            if self.on_train_step is not None:
                self.on_train_step(step, total, loss)
            if time.monotonic() - last_logged[0] > 2 or step == total:
                last_logged[0] = time.monotonic()
                self.log(session_id, f"train: step {step}/{total} loss {loss:.4f}")

        eval_base = replace(
            report.base_eval,
            task_accuracy=task_accuracy(base, run.eval_examples, max_prompts=MAX_SCORED_PROMPTS),
        )
        result = train_encoded(base, encoded, spec.hyperparams, on_step=on_step)
        try:
            eval_adapter = evaluate(
                base,
                run.eval_examples,
                model=result.model,
                accuracy=True,
                max_accuracy_prompts=MAX_SCORED_PROMPTS,
            )
            manifest = build_manifest(
                base,
                spec.hyperparams,
                [
                    DatasetRecord(
                        d.contributor,
                        _claimed_sha256(opened[d.contributor]),
                        d.evidence["examples"],
                        commitment=d.evidence["dataset_commitment"],
                    )
                    for d in accepted
                ],
                steps=result.steps,
                tokens=result.tokens,
                eval_base=eval_base,
                eval_adapter=eval_adapter,
                extra={
                    "session": self._session_fields(session_id),
                    "gate_rules_hash": "0x" + run.rules.hash().hex(),
                    "accepted": [d.contributor for d in accepted],
                    "rejected": [d.contributor for d in decisions if not d.accepted],
                    "provenance": [
                        {"contributor": d.contributor} | claim.to_dict()
                        for d in accepted
                        if (claim := opened[d.contributor].claim) is not None
                    ],
                },
            )
            with plaintext_workspace(self.workspace_root) as workspace:
                save_adapter(result.model, workspace / "adapter", manifest)
                archive = pack_adapter(workspace / "adapter")
        finally:
            detach_lora(result.model)
        return archive, manifest, {"base": eval_base.to_dict(), "joint": eval_adapter.to_dict()}

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

    def _committed(self, info: SessionInfo) -> tuple[SessionSpec, GateRules]:
        """The spec and rules the session committed (an outage is retried, bad ones fail)."""
        try:
            return fetch_spec(self.store, info.model_ref), fetch_rules(
                self.store, info.gate_rules_hash
            )
        except SpecError as exc:
            if exc.__cause__ is not None and is_infrastructure_fault(exc.__cause__):
                raise InfrastructureError(str(exc)) from exc
            raise SessionFailedError(str(exc)) from exc

    def _eval_set(self, info: SessionInfo, rules: GateRules) -> list[Example]:
        """The owner's eval set, under the same caps as a contribution."""
        try:
            ref = self.store.stat(info.eval_set_commitment.hex())
            if ref.size > max_ciphertext_bytes(rules.max_contribution_bytes):
                raise SessionFailedError(
                    f"the owner's eval set is {ref.size:,} bytes, over the rules' cap"
                )
            blob = self.store.get_bytes(ref)
            plain = self.keys.decrypt(blob, eval_set_info(self.chain_id, self._coord, info.owner))
            examples = list(load_dataset(plain, "eval set", rules.data_limits()).examples)
        except (StorageError, OSError) as exc:
            if is_infrastructure_fault(exc) or isinstance(exc, OSError):
                raise InfrastructureError(f"the owner's eval set: {exc}") from exc
            raise SessionFailedError(f"the owner's eval set cannot be used: {exc}") from exc
        except (CryptoError, DatasetValidationError, ValueError) as exc:
            raise SessionFailedError(f"the owner's eval set cannot be used: {exc}") from exc
        if len(examples) > self.limits.max_eval_examples:
            raise SessionFailedError(
                f"refused: the owner's eval set has {len(examples):,} examples, over this "
                f"aggregator's cap of {self.limits.max_eval_examples:,}"
            )
        return examples

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
        return certificate.to_dict() | {"signature": signature.hex()}

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
            certificate = RejectionCertificate.from_dict(raw)
            status = coordinator.contribution(session_id, certificate.contributor).status
            if status is not ContributionStatus.SUBMITTED:
                continue  # slashed already, refunded, or never accepted as a submission
            try:
                tx = coordinator.slash_with_proof(certificate, bytes.fromhex(raw["signature"]))
            except RevertError as exc:  # the chain refused it: retrying would not help
                self.log(session_id, f"slash of {certificate.contributor} not sent: {exc}")
                continue
            # Any other chain error propagates: an outage, retried from this checkpoint.
            gas[f"slash:{certificate.contributor}"] = tx.gas_used
            slashed.append(certificate.contributor)
            fault_point("slash-sent")
            self.log(session_id, f"slashed {certificate.contributor} in {tx.tx_hash}")
        return {"gas": gas, "slashed": slashed}

    def _result(self, session_id: int) -> dict[str, Any]:
        record = self.state.get(session_id)
        assert record is not None
        return record.result


def _slashable(decision: Decision) -> bool:
    """Whether a rejection costs its contributor the stake.

    Not for a copy of an earlier contribution (the first to commit a public dataset is
    not necessarily its owner: reject, pay nothing, take nothing), nor for a blob that
    changed at rest after its upload.
    """
    if decision.reason is Reason.CROSS_DUPLICATES:
        return False
    return bool(decision.evidence.get("slashable", True))


def _claimed_sha256(opened: Opened) -> str | None:
    """The data's plain SHA-256 if it is a claimed published dataset (public already)."""
    return opened.claim.signed.entry.artifact_sha256.hex() if opened.claim is not None else None
