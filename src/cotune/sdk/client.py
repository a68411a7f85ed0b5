"""``Client``: what an owner or a contributor does, in one object.

Every method checks what it can before it spends anything: ``submit`` verifies the
enclave's attestation and the pinned measurement, validates the data, checks the
session (open, before its deadline, allow-list, no earlier submission), and only then
encrypts, uploads and commits; a commit that would revert is caught at gas estimation,
so a failed submit costs no stake and leaves no commitment.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotune.aggregator.attestation import (
    AttestationVerifier,
    DevStatementVerifier,
    VerifiedEnclave,
    verify_enclave,
)
from cotune.aggregator.bindings import (
    commitment_salt_info,
    dataset_commitment,
    derive_salt,
    eval_set_info,
    model_info,
    model_key_info,
    submission_info,
)
from cotune.aggregator.package import unpack_adapter
from cotune.aggregator.spec import SessionSpec, SpecError, fetch_rules, publish, publish_rules
from cotune.chain.clients.coordinator import (
    ContributionInfo,
    ContributionStatus,
    SessionInfo,
    SessionParams,
    SessionState,
)
from cotune.chain.connection import Chain
from cotune.chain.deployment import Contracts, Deployment
from cotune.chain.limits import MAX_CONTRIBUTORS
from cotune.chain.statements import RejectionCertificate
from cotune.chain.transactions import TxResult
from cotune.common import jsonsafe
from cotune.common.errors import CotuneError
from cotune.common.progress import Progress, no_progress
from cotune.crypto.hpke import HpkePrivateKey, unseal
from cotune.crypto.identity import Identity
from cotune.crypto.stream import decrypt_bytes, encrypt_stream
from cotune.dataset.provenance import DatasetClaim, wrap_submission
from cotune.storage.base import BlobStore
from cotune.training.data import load_dataset
from cotune.training.rules import GateRules


class SubmitError(CotuneError):
    """A submission was refused before anything was spent."""


class SessionOptionsError(CotuneError):
    """A session cannot be opened with these options (nothing was stored or sent)."""


@dataclass(frozen=True)
class SessionOptions:
    """What an owner fixes when opening a session (deadlines in seconds from now)."""

    enclave_id: int
    quorum: int = 3
    max_contributors: int = 10
    submit_window: int = 3600
    training_window: int = 24 * 3600
    min_stake: int = 0
    allow_list: tuple[str, ...] = ()
    reward_pool: int = 0
    rules: GateRules = field(default_factory=GateRules)
    spec: SessionSpec = field(default_factory=SessionSpec)
    pinned_measurement: bytes | None = None


@dataclass(frozen=True)
class SubmitResult:
    """A committed submission."""

    session_id: int
    ciphertext_hash: bytes
    size: int
    examples: int
    tx: TxResult
    enclave: VerifiedEnclave
    commitment: str
    """The salted commitment to the data the session's public report will show if the
    enclave trained on exactly these bytes (see :meth:`Client.dataset_commitment`)."""


def _read(data: bytes | Path) -> tuple[bytes, str]:
    if isinstance(data, Path):
        return data.read_bytes(), str(data)
    return data, "<memory>"


class Client:
    """One participant (wallet + HPKE key) on one deployment and one blob store."""

    def __init__(
        self, chain: Chain, deployment: Deployment, storage: BlobStore, identity: Identity
    ) -> None:
        self.chain = chain
        self.deployment = deployment
        self.storage = storage
        self.identity = identity
        self.contracts = Contracts.at(chain, deployment, identity.account)

    @property
    def address(self) -> str:
        """This participant's address."""
        return self.identity.address

    def verifiers(self) -> dict[str, AttestationVerifier]:
        """The attestation verifiers this client can check, by verifier contract address."""
        return {self.contracts.verifier.address: DevStatementVerifier(self.contracts.verifier)}

    def verify_enclave(
        self, enclave_id: int, pinned_measurement: bytes | None = None
    ) -> VerifiedEnclave:
        """The enclave's attestation, checked (``AttestationError`` when it does not hold)."""
        return verify_enclave(
            self.contracts.registry,
            self.verifiers(),
            enclave_id,
            pinned_measurement=pinned_measurement,
        )

    # ---- owner ------------------------------------------------------------------------------

    def open_session(self, eval_set: bytes | Path, options: SessionOptions) -> int:
        """Encrypt the eval set to the enclave, publish the spec and rules, open the session."""
        if not 1 <= options.quorum <= options.max_contributors <= MAX_CONTRIBUTORS:
            raise SessionOptionsError(
                f"need 1 <= quorum ({options.quorum}) <= max contributors "
                f"({options.max_contributors}) <= {MAX_CONTRIBUTORS}"
            )
        data, source = _read(eval_set)
        # Refused before anything is stored: an invalid eval set, or one over the rules' caps.
        load_dataset(data, source, options.rules.data_limits())
        enclave = self.verify_enclave(options.enclave_id, options.pinned_measurement)
        coordinator = self.contracts.coordinator
        info = eval_set_info(self.chain.chain_id, coordinator.address, self.address)
        sink = io.BytesIO()
        encrypt_stream(io.BytesIO(data), sink, enclave.hpke_public_key, info)
        eval_ref = self.storage.put(io.BytesIO(sink.getvalue()))
        now = self.chain.timestamp()
        params = SessionParams(
            enclave_id=options.enclave_id,
            measurement=enclave.record.measurement,
            quorum=options.quorum,
            max_contributors=options.max_contributors,
            submit_deadline=now + options.submit_window,
            training_deadline=now + options.submit_window + options.training_window,
            min_stake=options.min_stake,
            allow_list=options.allow_list,
            eval_set_commitment=eval_ref.digest,
            gate_rules_hash=publish_rules(self.storage, options.rules),
            model_ref=publish(self.storage, options.spec.to_dict()),
        )
        return coordinator.create_session(params, reward_pool=options.reward_pool)

    def cancel(self, session_id: int) -> TxResult:
        """Cancel an open session (owner)."""
        return self.contracts.coordinator.cancel(session_id)

    def close(self, session_id: int) -> TxResult:
        """After the submit deadline: start training at quorum, else expire (anyone)."""
        return self.contracts.coordinator.close(session_id)

    # ---- contributor ------------------------------------------------------------------------

    def submit(
        self,
        session_id: int,
        data: bytes | Path,
        *,
        stake: int | None = None,
        pinned_measurement: bytes | None = None,
        dataset: DatasetClaim | None = None,
        progress: Progress = no_progress,
        upload_progress: Progress = no_progress,
    ) -> SubmitResult:
        """Validate, check, encrypt to the session's enclave, upload and commit with a stake.

        ``dataset`` claims the data is a signed dataset version (checked here, carried
        inside the ciphertext, checked again by the enclave and recorded in the adapter's
        ``cotune.json``). ``progress`` gets plaintext bytes encrypted, ``upload_progress``
        bytes uploaded.
        """
        plaintext, source = _read(data)
        coordinator = self.contracts.coordinator
        session = coordinator.session(session_id)
        try:
            rules = fetch_rules(self.storage, session.gate_rules_hash)
        except SpecError as exc:
            raise SubmitError(f"session {session_id}'s gate rules cannot be read: {exc}") from exc
        # The session's caps, as the enclave applies them: over one, nothing is spent.
        dataset_examples = load_dataset(plaintext, source, rules.data_limits())
        if dataset is not None:
            dataset.check(plaintext)
        self._check_can_submit(session)
        enclave = self.verify_enclave(session.enclave_id, pinned_measurement)
        if enclave.record.measurement != session.measurement:
            raise SubmitError(
                f"session {session_id} pins measurement 0x{session.measurement.hex()} but its "
                f"enclave now reports 0x{enclave.record.measurement.hex()}"
            )
        info = submission_info(self.chain.chain_id, coordinator.address, session_id, self.address)
        sink = io.BytesIO()
        salt = self._commitment_salt(session_id)
        envelope = wrap_submission(plaintext, [dataset] if dataset is not None else [], salt=salt)
        encrypt_stream(io.BytesIO(envelope), sink, enclave.hpke_public_key, info, progress=progress)
        ciphertext = sink.getvalue()
        digest = hashlib.sha256(ciphertext).digest()
        hpke_key = self.identity.hpke.public_key().to_bytes()
        amount = session.min_stake if stake is None else stake
        # A commit that would revert is refused before the upload, so nothing is orphaned.
        coordinator.check_submit(session_id, digest, hpke_key, stake=amount)
        ref = self.storage.put(io.BytesIO(ciphertext), progress=upload_progress)
        tx = coordinator.submit(session_id, ref.digest, hpke_key, stake=amount)
        return SubmitResult(
            session_id,
            ref.digest,
            ref.size,
            len(dataset_examples.examples),
            tx,
            enclave,
            dataset_commitment(salt, plaintext),
        )

    def _commitment_salt(self, session_id: int) -> bytes:
        info = commitment_salt_info(
            self.chain.chain_id, self.contracts.coordinator.address, session_id, self.address
        )
        return derive_salt(self.identity.hpke.secret_bytes(), info)

    def dataset_commitment(self, session_id: int, data: bytes | Path) -> str:
        """What the session's report shows of ``data`` if this participant submitted it.

        Recomputed from this identity's key alone: compare it with the report's
        ``dataset_commitment`` to check the enclave trained on exactly these bytes.
        """
        plaintext, _ = _read(data)
        return dataset_commitment(self._commitment_salt(session_id), plaintext)

    def _check_can_submit(self, session: SessionInfo) -> None:
        sid = session.session_id
        if session.state is not SessionState.OPEN:
            raise SubmitError(f"session {sid} is {session.state.name}, not Open")
        # The commit lands in a later block, at least one second after the latest one.
        if self.chain.timestamp() + 1 > session.submit_deadline:
            raise SubmitError(f"session {sid}'s submit deadline has passed")
        coordinator = self.contracts.coordinator
        if session.allow_listed and not coordinator.is_allowed(sid, self.address):
            raise SubmitError(f"{self.address} is not on session {sid}'s allow-list")
        if coordinator.contribution(sid, self.address).status is not ContributionStatus.NONE:
            raise SubmitError(f"{self.address} has already submitted to session {sid}")

    # ---- everyone -----------------------------------------------------------------------------

    def session(self, session_id: int) -> SessionInfo:
        """The session as the chain holds it."""
        return self.contracts.coordinator.session(session_id)

    def contribution(self, session_id: int) -> ContributionInfo:
        """This participant's contribution to a session."""
        return self.contracts.coordinator.contribution(session_id, self.address)

    def status(self, session_id: int) -> dict[str, Any]:
        """Session state, this participant's contribution and what it can claim."""
        session = self.session(session_id)
        mine = self.contribution(session_id)
        return {
            "session_id": session_id,
            "state": session.state.name.lower(),
            "owner": session.owner,
            "submitted": session.submitted,
            "quorum": session.quorum,
            "max_contributors": session.max_contributors,
            "submit_deadline": session.submit_deadline,
            "training_deadline": session.training_deadline,
            "accepted_count": session.accepted_count,
            "model_hash": "0x" + session.model_hash.hex(),
            "manifest_hash": "0x" + session.manifest_hash.hex(),
            "you": {
                "address": self.address,
                "status": mine.status.name.lower(),
                "stake": mine.stake,
                "weight": mine.weight,
                "claimable": self.contracts.coordinator.claimable(session_id, self.address),
            },
        }

    def report(self, session_id: int) -> dict[str, Any]:
        """The public session report (gate decisions, eval metrics) the enclave published."""
        session = self.session(session_id)
        if session.state is not SessionState.FINALIZED:
            raise LookupError(f"session {session_id} is {session.state.name}: no report yet")
        ref = self.storage.stat(session.manifest_hash.hex())
        report: dict[str, Any] = jsonsafe.loads(self.storage.get_bytes(ref))
        return report

    def download(
        self, session_id: int, destination: Path, *, progress: Progress = no_progress
    ) -> Path:
        """Unseal this holder's model key, fetch and verify the adapter, unpack it.

        ``progress`` gets ciphertext bytes fetched; nothing is written to ``destination``
        unless the blob matched the on-chain hash and every chunk decrypted.
        """
        session = self.session(session_id)
        if session.state is not SessionState.FINALIZED:
            raise LookupError(f"session {session_id} is {session.state.name}: no model yet")
        sealed = self._sealed_key(session_id, session.accepted_count)
        coordinator = self.contracts.coordinator.address
        key_info = model_key_info(self.chain.chain_id, coordinator, session_id, self.address)
        model_key = HpkePrivateKey(
            self.identity.hpke.suite, unseal(sealed, self.identity.hpke, key_info)
        )
        blob = self.storage.get_bytes(
            self.storage.stat(session.model_hash.hex()), progress=progress
        )
        archive = decrypt_bytes(
            blob, model_key, model_info(self.chain.chain_id, coordinator, session_id)
        )
        unpack_adapter(archive, destination)
        return destination

    def model_size(self, session_id: int) -> int:
        """Size in bytes of a finalized session's encrypted adapter."""
        session = self.session(session_id)
        if session.state is not SessionState.FINALIZED:
            raise LookupError(f"session {session_id} is {session.state.name}: no model yet")
        return self.storage.stat(session.model_hash.hex()).size

    def _sealed_key(self, session_id: int, accepted_count: int) -> bytes:
        nft = self.contracts.model_nft
        for index in range(accepted_count):
            events = nft.sealed_key_events(nft.token_id_for(session_id, index))
            if events and events[-1].holder == self.address:
                return events[-1].sealed_key
        raise LookupError(f"{self.address} holds no model token of session {session_id}")

    def claim(self, session_id: int) -> int:
        """Withdraw what the session owes this participant."""
        return self.contracts.coordinator.claim(session_id)

    def slash(self, certificate: RejectionCertificate, signature: bytes) -> TxResult:
        """Submit an enclave-signed rejection certificate (anyone may)."""
        return self.contracts.coordinator.slash_with_proof(certificate, signature)
