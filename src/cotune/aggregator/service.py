"""The aggregator service: an enclave, its registration, and the sessions it runs.

``Aggregator.start`` opens (or creates) the sealed enclave keys, computes the code
measurement and registers the enclave on chain when no live record matches it.
``poll`` reads new ``QuorumReached`` events (through a persisted cursor, with
confirmations), queues the sessions that name this enclave, and runs every queued
session as far as it can go.

**Scheduling.** Sessions run one at a time, in the order they reached quorum, each within
a budget: the operator's :class:`~cotune.aggregator.limits.OperatorLimits` (checked on the
session's worst case before any work) and its training deadline (checked before each
stage and after every training step), optionally a wall-clock budget per session. So a
session waits at most for the budgets of those ahead of it. Not a worker per session:
training saturates the machine (every core, or the accelerator), so sessions side by side
would finish no sooner and would each hold a copy of the base model. A session whose
storage or chain fails is retried with backoff (:func:`~cotune.aggregator.faults.retry_delay`)
and others run meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cotune.aggregator.attestation import RevokedKeysError
from cotune.aggregator.enclave import EnclaveKeys, load_or_create_keys
from cotune.aggregator.faults import is_infrastructure_fault, retry_delay
from cotune.aggregator.limits import OperatorLimits
from cotune.aggregator.measurement import code_measurement
from cotune.aggregator.pipeline import MAX_ATTEMPTS, BaseModels, SessionProcessor
from cotune.aggregator.state import Stage, StateStore, open_state_store
from cotune.aggregator.workspace import plaintext_root, sweep
from cotune.chain.connection import Chain
from cotune.chain.deployment import Contracts, Deployment
from cotune.chain.events import Event, QuorumReached
from cotune.chain.watcher import EventWatcher
from cotune.storage.base import BlobStore
from cotune.training.trainer import StepCallback

ENCLAVE_ID_KEY = "enclave_id"
SIGNER_FLOAT = 10**18
"""Wei the operator keeps on the enclave signer, which pays for finalize and slash."""


@dataclass(frozen=True)
class AggregatorConfig:
    """Where the service keeps its state, and how it watches the chain."""

    data_dir: Path
    operator_secret: str
    confirmations: int = 0
    poll_seconds: float = 1.0
    limits: OperatorLimits = field(default_factory=OperatorLimits)


class Aggregator:
    """One enclave serving the sessions that name it."""

    def __init__(
        self,
        chain: Chain,
        deployment: Deployment,
        store: BlobStore,
        config: AggregatorConfig,
        *,
        keys: EnclaveKeys | None = None,
        state: StateStore | None = None,
        bases: BaseModels | None = None,
        on_train_step: StepCallback | None = None,
    ) -> None:
        self.chain = chain
        self.on_train_step = on_train_step
        self.deployment = deployment
        self.store = store
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.keys = keys or load_or_create_keys(
            config.data_dir / "enclave.sealed.json", config.operator_secret
        )
        self.state = state or open_state_store(config.data_dir / "state.sqlite3")
        self.workspace_root = plaintext_root(config.data_dir)
        self.swept_on_start = sweep(self.workspace_root)
        """Plaintext entries a killed run had left behind, removed at this start."""
        self.measurement = code_measurement()
        self.contracts = Contracts.at(chain, deployment)
        self.bases = bases or BaseModels()
        self._processor: SessionProcessor | None = None
        self.watch_error: str | None = None
        """Why the last look for new sessions failed (a chain outage), if it did."""
        self._watcher = EventWatcher(
            chain,
            [deployment.coordinator],
            event_types=[QuorumReached],
            start_block=deployment.block_number,
            confirmations=config.confirmations,
            cursor_path=config.data_dir / "watcher.cursor.json",
        )

    @property
    def enclave_id(self) -> int | None:
        """This enclave's id on chain, once registered."""
        value = self.state.get_value(ENCLAVE_ID_KEY)
        return int(value) if value is not None else None

    def register(self, authority: LocalAccount, operator: LocalAccount) -> int:
        """Register the enclave (dev attestation by ``authority``, sent by ``operator``).

        Idempotent: a live record with the same signer, HPKE key and measurement is reused.
        Keys the registry revoked never register again, so revoked keys raise
        ``RevokedKeysError`` (before anything is sent): the operator must start over with
        fresh keys. The operator also tops up the enclave signer, which pays for its own
        transactions.
        """
        registry = self.contracts.registry
        public = self.keys.public
        hpke = public.hpke_public_key.to_bytes()
        if registry.is_signer_revoked(public.signer) or registry.is_hpke_key_revoked(hpke):
            raise RevokedKeysError(
                f"the registry revoked this enclave's keys (signer {public.signer}): they can "
                "never register again. Start with fresh keys: a new --data-dir, or delete "
                f"{self.config.data_dir / 'enclave.sealed.json'}"
            )
        if self.chain.balance(public.signer) < SIGNER_FLOAT // 2:
            self.chain.fund(public.signer, SIGNER_FLOAT, payer=operator)
        known = self.enclave_id
        if known is not None:
            record = registry.get(known)
            same_keys = (record.signer, record.hpke_public_key) == (public.signer, hpke)
            if same_keys and not record.revoked and record.measurement == self.measurement:
                return known
        evidence = self.contracts.verifier.attest(authority, public.signer, hpke, self.measurement)
        enclave_id = registry.as_account(operator).register(
            public.signer, hpke, self.measurement, self.deployment.dev_verifier, evidence
        )
        self.state.set_value(ENCLAVE_ID_KEY, str(enclave_id))
        return enclave_id

    @property
    def processor(self) -> SessionProcessor:
        """The session runner (needs the enclave registered)."""
        if self._processor is None:
            enclave_id = self.enclave_id
            if enclave_id is None:
                raise RuntimeError("the enclave is not registered yet")
            self._processor = SessionProcessor(
                contracts=self.contracts,
                store=self.store,
                keys=self.keys,
                enclave_id=enclave_id,
                measurement=self.measurement,
                state=self.state,
                workspace_root=self.workspace_root,
                limits=self.config.limits,
                bases=self.bases,
                from_block=self.deployment.block_number,
                on_train_step=self.on_train_step,
            )
        return self._processor

    def _on_event(self, event: Event) -> None:
        if isinstance(event, QuorumReached):
            info = self.contracts.coordinator.session(event.session_id)
            if info.enclave_id == self.enclave_id:
                self.state.enqueue(event.session_id)
                self.state.log(event.session_id, f"quorum reached with {event.submitted}")

    def poll(self) -> list[int]:
        """Queue new sessions, then run every unfinished one that is due; those that moved.

        A chain outage while reading new events is logged and waited out (the cursor did
        not move, so nothing is missed); sessions already queued still run.
        """
        try:
            self._watcher.poll(self._on_event)
        except Exception as exc:
            if not is_infrastructure_fault(exc):
                raise
            self.watch_error = f"{type(exc).__name__}: {exc}"
        else:
            self.watch_error = None
        moved = []
        for record in self.state.sessions():
            if record.stage in (Stage.DONE, Stage.FAILED) or record.not_before > time.time():
                continue
            try:
                reached = self.processor.process(record.session_id)
            except Exception as exc:  # a daemon outlives an RPC or storage outage
                self._retry_later(record.session_id, exc)
                continue
            if reached is not record.stage:
                moved.append(record.session_id)
        return moved

    def _retry_later(self, session_id: int, exc: Exception) -> None:
        """Schedule another try; an outage is never the session's (nor anyone's) fault.

        Storage and chain faults back off and go on until the training deadline (the
        pipeline fails the session once it has passed); any other error counts as an
        attempt, and ``MAX_ATTEMPTS`` of those give the session up.
        """
        message = f"{type(exc).__name__}: {exc}"
        record = self.state.get(session_id)
        if record is None:
            return
        outage = is_infrastructure_fault(exc)
        if not outage and record.attempts >= MAX_ATTEMPTS:
            self.state.log(session_id, f"giving up after {record.attempts} attempts: {message}")
            self.state.fail(session_id, message)
            return
        delay = retry_delay(record.faults + 1 if outage else 1)
        self.state.retry_later(session_id, message, time.time() + delay, infrastructure=outage)
        kind = "storage or chain fault (no one is blamed)" if outage else "error"
        self.state.log(session_id, f"{kind}, retrying in {delay:.0f} s: {message}")

    def recover(self, session_id: int) -> Stage:
        """Retry a failed (or stuck) session from its last checkpoint."""
        record = self.state.get(session_id)
        if record is None:
            self.state.enqueue(session_id)
        else:
            self.state.reset_attempts(session_id)
        if record is not None and record.stage is Stage.FAILED:
            resume = _last_checkpoint(record.timestamps)
            self.state.advance(session_id, resume)
            self.state.log(session_id, f"recovery: resuming from {resume.value}")
        return self.processor.process(session_id)

    def run(self, *, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Poll until ``should_stop`` says so."""
        while not should_stop():
            self.poll()
            time.sleep(self.config.poll_seconds)


def _last_checkpoint(timestamps: dict[str, float]) -> Stage:
    reached = [s for s in Stage if s not in (Stage.FAILED, Stage.DONE) and s.value in timestamps]
    return max(reached, key=lambda s: s.rank) if reached else Stage.QUEUED
