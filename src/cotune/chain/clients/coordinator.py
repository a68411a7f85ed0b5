"""Typed client of the ``Coordinator``: sessions, submissions, finalize, slash, claim."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from eth_account.signers.local import LocalAccount
from web3.types import TxParams, Wei

from cotune.chain.clients.base import ContractClient
from cotune.chain.events import Claimed, SessionCreated, Submitted
from cotune.chain.statements import RejectionCertificate, coordinator_domain
from cotune.chain.transactions import TxResult
from cotune.crypto.eip712 import Eip712Domain

ZERO32 = bytes(32)


class SessionState(IntEnum):
    """``Coordinator.State``."""

    NONE = 0
    OPEN = 1
    TRAINING = 2
    FINALIZED = 3
    CANCELLED = 4
    EXPIRED = 5


class ContributionStatus(IntEnum):
    """``Coordinator.Status``."""

    NONE = 0
    SUBMITTED = 1
    ACCEPTED = 2
    SLASHED = 3
    REFUNDED = 4


class Payout(IntEnum):
    """``Coordinator.Payout``: what an accepted contribution has been paid."""

    NONE = 0
    STAKE_RETURNED = 1
    """Its stake, and its reward share so far."""
    SETTLED = 2
    """Its stake and its share of the final pool (the last to settle: the rest of it)."""


@dataclass(frozen=True)
class SessionParams:
    """What an owner fixes when opening a session (all hashes are 32 bytes)."""

    enclave_id: int
    measurement: bytes
    quorum: int
    max_contributors: int
    submit_deadline: int
    training_deadline: int
    min_stake: int = 0
    allow_list: Sequence[str] = field(default_factory=tuple)
    eval_set_commitment: bytes = ZERO32
    gate_rules_hash: bytes = ZERO32
    model_ref: bytes = ZERO32

    def as_tuple(self) -> tuple[object, ...]:
        """The struct as the contract's ABI takes it."""
        return (
            self.enclave_id,
            self.measurement,
            self.quorum,
            self.max_contributors,
            self.min_stake,
            self.submit_deadline,
            self.training_deadline,
            list(self.allow_list),
            self.eval_set_commitment,
            self.gate_rules_hash,
            self.model_ref,
        )


@dataclass(frozen=True)
class SessionInfo:
    """A session as the Coordinator holds it."""

    session_id: int
    owner: str
    state: SessionState
    allow_listed: bool
    quorum: int
    max_contributors: int
    submitted: int
    enclave_signer: str
    submit_deadline: int
    training_deadline: int
    finalized_at: int
    accepted_count: int
    slashed_count: int
    settled_count: int
    enclave_id: int
    min_stake: int
    pool: int
    pool_paid: int
    """Paid out of the pool: rewards once finalized, or to the owner after cancel or expiry."""
    total_weight: int
    measurement: bytes
    eval_set_commitment: bytes
    gate_rules_hash: bytes
    model_ref: bytes
    model_hash: bytes
    manifest_hash: bytes


@dataclass(frozen=True)
class ContributionInfo:
    """One contributor's commitment to a session."""

    stake: int
    reward_paid: int
    weight: int
    status: ContributionStatus
    payout: Payout
    ciphertext_hash: bytes


class CoordinatorClient(ContractClient):
    """Open, submit to, close, cancel, expire, finalize, slash and claim sessions."""

    CONTRACT = "Coordinator"

    def domain(self) -> Eip712Domain:
        """The EIP-712 domain of rejection certificates for this contract."""
        return coordinator_domain(self.chain.chain_id, self.address)

    # owner
    def create_session(self, params: SessionParams, *, reward_pool: int = 0) -> int:
        """Open a session funded with ``reward_pool`` wei; returns its id."""
        result = self._send("createSession", params.as_tuple(), value=reward_pool)
        event: SessionCreated = result.first(SessionCreated)
        return event.session_id

    def cancel(self, session_id: int) -> TxResult:
        """Cancel an open session before its submit deadline, or below quorum (owner)."""
        return self._send("cancel", session_id)

    # contributor
    def submit(
        self, session_id: int, ciphertext_hash: bytes, hpke_public_key: bytes, *, stake: int
    ) -> TxResult:
        """Commit a ciphertext hash and HPKE key with ``stake`` wei."""
        return self._send("submit", session_id, ciphertext_hash, hpke_public_key, value=stake)

    def check_submit(
        self, session_id: int, ciphertext_hash: bytes, hpke_public_key: bytes, *, stake: int
    ) -> int:
        """Dry-run ``submit`` (gas estimation): ``RevertError`` now, nothing sent; returns gas."""
        call = self.contract.functions.submit(session_id, ciphertext_hash, hpke_public_key)
        params: TxParams = {"from": self.account_address, "value": Wei(stake)}
        return int(self._guarded("submit", lambda: call.estimate_gas(params)))

    def claim(self, session_id: int) -> int:
        """Withdraw what the session owes this account; returns the amount in wei.

        Once a finalized session's pool is final, an accepted contributor's first claim
        settles its share even when it pays 0 wei; the last to settle takes the rest.
        """
        event: Claimed = self._send("claim", session_id).first(Claimed)
        return event.amount

    # anyone
    def close(self, session_id: int) -> TxResult:
        """After the submit deadline: start training at quorum, else expire."""
        return self._send("close", session_id)

    def expire(self, session_id: int) -> TxResult:
        """After the training deadline without finalize: return stakes and pool."""
        return self._send("expire", session_id)

    def slash_with_proof(self, certificate: RejectionCertificate, signature: bytes) -> TxResult:
        """Slash a contributor with the enclave's signed rejection certificate."""
        return self._send("slashWithProof", certificate.as_tuple(), signature)

    # enclave
    def finalize(
        self,
        session_id: int,
        model_hash: bytes,
        manifest_hash: bytes,
        accepted: Sequence[str],
        weights: Sequence[int],
        sealed_keys: Sequence[bytes],
    ) -> TxResult:
        """Record the model, accept contributors and mint their tokens (enclave signer)."""
        return self._send(
            "finalize",
            session_id,
            model_hash,
            manifest_hash,
            list(accepted),
            list(weights),
            list(sealed_keys),
        )

    def sign_rejection(
        self, enclave_signer: LocalAccount, certificate: RejectionCertificate
    ) -> bytes:
        """Sign a rejection certificate for this chain and contract (enclave)."""
        return certificate.sign(enclave_signer, self.domain())

    # views
    def session(self, session_id: int) -> SessionInfo:
        """A session's full state; ``RevertError`` (UnknownSession) when there is none."""
        raw = self._call("getSession", session_id)
        return SessionInfo(
            session_id=session_id,
            owner=raw[0],
            state=SessionState(raw[1]),
            allow_listed=bool(raw[2]),
            quorum=int(raw[3]),
            max_contributors=int(raw[4]),
            submitted=int(raw[5]),
            enclave_signer=raw[6],
            submit_deadline=int(raw[7]),
            training_deadline=int(raw[8]),
            finalized_at=int(raw[9]),
            accepted_count=int(raw[10]),
            slashed_count=int(raw[11]),
            settled_count=int(raw[12]),
            enclave_id=int(raw[13]),
            min_stake=int(raw[14]),
            pool=int(raw[15]),
            pool_paid=int(raw[16]),
            total_weight=int(raw[17]),
            measurement=bytes(raw[18]),
            eval_set_commitment=bytes(raw[19]),
            gate_rules_hash=bytes(raw[20]),
            model_ref=bytes(raw[21]),
            model_hash=bytes(raw[22]),
            manifest_hash=bytes(raw[23]),
        )

    def submissions(self, session_id: int, from_block: int = 0) -> list[Submitted]:
        """Every ``Submitted`` event of a session, in chain order."""
        return self._events(Submitted, session_id, from_block)

    def contribution(self, session_id: int, contributor: str) -> ContributionInfo:
        """A contributor's commitment (status NONE when it never submitted)."""
        raw = self._call("getContribution", session_id, contributor)
        return ContributionInfo(
            int(raw[0]),
            int(raw[1]),
            int(raw[2]),
            ContributionStatus(raw[3]),
            Payout(raw[4]),
            bytes(raw[5]),
        )

    def claimable(self, session_id: int, account: str) -> int:
        """What ``account`` could claim from a session now, in wei."""
        return int(self._call("claimable", session_id, account))

    def is_allowed(self, session_id: int, account: str) -> bool:
        """Whether ``account`` is on the session's allow-list."""
        return bool(self._call("isAllowed", session_id, account))

    def session_count(self) -> int:
        """How many sessions were ever created."""
        return int(self._call("sessionCount"))

    def slash_window(self) -> int:
        """Seconds after finalize during which rejected contributors can be slashed."""
        return int(self._call("slashWindow"))
