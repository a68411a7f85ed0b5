"""Stateful property test: the Coordinator and ModelNFT against a pure-Python model.

Hypothesis drives random sequences of createSession, submit, close, cancel, expire,
finalize, slashWithProof (fresh and replayed certificates), claim, clock moves (by some
seconds, or onto a deadline or the end of a slash window, followed by the call that
deadline governs), enclave revocation and model-token ``iTransferFrom``. The machine
keeps a model of every session and of what it owes each account. Each call is
predicted first: a call the model expects to fail must raise ``RevertError`` with the
expected custom error, and one it expects to succeed must succeed, mined at the second
the model expects. After every step the invariants check that:

- the Coordinator holds exactly what it owes: stakes not yet paid out plus every
  session's pool not yet paid out (rounding dust included), which is also all wei in
  minus all wei out, and what everyone may claim fits in it;
- a finalized session whose accepted contributors have all settled has paid out its
  whole pool: the last to settle took the rounding dust;
- ``claimable`` equals the model's expectation;
- session states, counters and contributions match the model;
- a certificate never slashes twice, and nobody claims twice;
- model tokens are where the model says: one per accepted contributor at finalize,
  moved only with a valid re-seal proof, never held by a slashed contributor.

It runs on the embedded EVM and on a private anvil, from contracts deployed once per
chain and a snapshot reverted to before each example. Both chains keep time exactly:
the embedded one runs far ahead of the wall clock, so each block is its parent plus one
second, and anvil is told not to move its clock between blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from chain_fixtures import SnapshotStage, in_fresh_thread
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cotune.chain import (
    MAX_CONTRIBUTORS,
    Chain,
    Contracts,
    CoordinatorClient,
    Deployment,
    ModelNftClient,
    Payout,
    RejectionCertificate,
    RevertError,
    SessionParams,
    connect,
    deploy_all,
)
from cotune.chain.clients.coordinator import ContributionStatus as Status
from cotune.chain.clients.coordinator import SessionState as State
from cotune.chain.devnet import free_port, start_anvil
from cotune.chain.events import ContributionAccepted, PublishedSealedKey, Slashed
from cotune.chain.statements import coordinator_domain, model_nft_domain, sign_reseal_statement

R = TypeVar("R")

N_ACTORS = 9
"""Dev accounts 1..9 own sessions, submit, claim and hold tokens (0 deploys)."""
MAX_SESSIONS = 3
"""Sessions per example; createSession calls beyond it only test its reverts."""
ROTATE_EVERY = 3
"""Every this many steps the invariants re-read one session the step did not touch."""
MAX_SLASHES = 4
MAX_TRANSFERS = 4
"""Successful slashes and token transfers per example. Both verify a signature on
chain; the embedded EVM's pure-Python ecrecover, run a score of times by each gas
estimate, makes one cost about half a second there."""
SLASH_WINDOWS = (5, 400)
"""Each example runs on contracts with one of these slash windows (seconds)."""
UINT48_MAX = 2**48 - 1
ENCLAVE_KEYS = [keccak(text=f"cotune stateful enclave {i}") for i in range(2)]
"""Two enclaves: sessions pin either; only the second can be revoked."""

ACTOR = st.integers(0, N_ACTORS - 1)
PICK = st.integers(0, 20)
"""Chooses a session (see ``CoordinatorMachine._session``)."""
UNKNOWN = 11
"""The ``PICK`` that names a session id nobody created."""
SESSION_ARGS = {
    "owner": ACTOR,
    "enclave": st.sampled_from([0, 1]),
    "quorum": st.integers(1, 3),
    "extra": st.integers(0, 3),
    "min_stake": st.one_of(st.just(0), st.integers(0, 1000)),
    "pool": st.one_of(st.integers(0, 10**6), st.just(10**18)),
    "submit_in": st.integers(1, 600),
    "train_in": st.integers(1, 900),
    "allow": st.one_of(st.none(), st.lists(ACTOR, max_size=6)),
}
"""What ``createSession`` varies (beyond the deliberate mistakes)."""
WEIGHT = st.one_of(st.integers(1, 10), st.integers(1, UINT48_MAX))
EMBEDDED_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ANVIL_SETTINGS = settings(EMBEDDED_SETTINGS, max_examples=5)
SHRINK_TIMEOUT_S = 600
"""A passing run takes about a minute; a failing one may shrink for Hypothesis' five
minutes, and its report is worth the wait (the default test timeout is 300 s)."""


def mostly(common: str, *rare: str, odds: int = 2) -> st.SearchStrategy[str]:
    """``common`` about ``odds`` times as often as all ``rare`` values together.

    ``common`` comes first and between the rare values, so shrinking moves towards it.
    """
    items = [common]
    for value in rare:
        items += [value] + [common] * odds
    return st.sampled_from(items)


# ----------------------------------------------------------------------- model


@dataclass
class ContributionModel:
    """What the model expects ``getContribution`` to return."""

    stake: int
    ciphertext: bytes
    status: Status = Status.SUBMITTED
    weight: int = 0
    reward_paid: int = 0
    payout: Payout = Payout.NONE


@dataclass
class SessionModel:
    """One session as the model sees it, with its tokens."""

    sid: int
    owner: str
    enclave: int
    quorum: int
    max_contributors: int
    min_stake: int
    submit_deadline: int
    training_deadline: int
    allow_list: frozenset[str] | None
    pool: int
    state: State = State.OPEN
    pool_paid: int = 0
    """Paid out of the pool: rewards once finalized, or to the owner."""
    submitted: int = 0
    slashed_count: int = 0
    settled_count: int = 0
    finalized_at: int = 0
    total_weight: int = 0
    accepted: list[str] = field(default_factory=list)
    contributions: dict[str, ContributionModel] = field(default_factory=dict)
    holders: dict[int, str] = field(default_factory=dict)
    """Token id -> holder."""
    nonces: dict[int, int] = field(default_factory=dict)
    """Token id -> transfer nonce."""


@dataclass(frozen=True)
class EnclaveModel:
    account: LocalAccount
    enclave_id: int
    measurement: bytes


@dataclass(frozen=True)
class UsedCertificate:
    certificate: RejectionCertificate
    signature: bytes


@dataclass(frozen=True)
class UsedProof:
    token_id: int
    sender: str
    receiver: str
    sealed_key: bytes
    proof: bytes


def _any_submitted(s: SessionModel) -> bool:
    """Whether some contribution to ``s`` is neither accepted, slashed nor refunded."""
    return any(c.status == Status.SUBMITTED for c in s.contributions.values())


# --------------------------------------------------------------------- machine


@dataclass(frozen=True)
class Deployed:
    """A deployment made before the snapshot, with its two registered enclaves."""

    deployment: Deployment
    enclaves: tuple[EnclaveModel, ...]


class Stage(SnapshotStage):
    """Every deployment of the machine (one per slash window), under one snapshot."""

    def __init__(self, chain: Chain) -> None:
        self.deployed = [_deploy(chain, window) for window in SLASH_WINDOWS]
        super().__init__(chain)


def _deploy(chain: Chain, slash_window: int) -> Deployed:
    """Deploy all five contracts and register two funded dev enclaves."""
    deployer = chain.dev_accounts[0]
    deployment = deploy_all(chain, deployer, slash_window=slash_window)
    contracts = Contracts.at(chain, deployment, deployer)
    enclaves = []
    for i, key in enumerate(ENCLAVE_KEYS):
        account = Account.from_key(key)
        hpke = b"\x00\x20" + keccak(key)
        measurement = keccak(text=f"measurement {i}")
        evidence = contracts.verifier.attest(deployer, account.address, hpke, measurement)
        enclave_id = contracts.registry.register(
            account.address, hpke, measurement, contracts.verifier.address, evidence
        )
        if chain.balance(account.address) < 10**18:
            chain.fund(account.address, 10**20)
        enclaves.append(EnclaveModel(account, enclave_id, measurement))
    return Deployed(deployment, tuple(enclaves))


class CoordinatorMachine(RuleBasedStateMachine):
    """Random sessions on untouched contracts, checked step by step against the model."""

    def __init__(self, chain: Chain, deployed: list[Deployed]) -> None:
        super().__init__()
        self.chain = chain
        self.deployed = deployed
        # Views run at the latest block's time; a transaction runs in the next block,
        # one second later on the embedded EVM and at the same second on our anvil.
        self.tx_offset = 1 if chain.is_embedded else 0
        self.latest = chain.timestamp()
        """The latest block's timestamp: views run at it."""
        self.deployer = chain.dev_accounts[0]
        self.actors = chain.dev_accounts[1 : 1 + N_ACTORS]
        self.addresses = [str(a.address) for a in self.actors]
        self.keys = {str(a.address): a for a in self.actors}
        self.sessions: list[SessionModel] = []
        self.enclaves: list[EnclaveModel] = []
        self.revoked: set[int] = set()
        self.window = 0
        self.deposited = 0
        self.withdrawn = 0
        self.used_certificates: list[UsedCertificate] = []
        self.slashing_digests: set[bytes] = set()
        self.proofs: list[UsedProof] = []
        self.step = 0
        self.dirty: set[int] = set()
        self.touched: set[tuple[int, str]] = set()
        self.created = False
        self.tokens_dirty = False
        self._coordinators: dict[str, CoordinatorClient] = {}
        self._nfts: dict[str, ModelNftClient] = {}

    # ------------------------------------------------------------- plumbing

    @initialize(
        which=st.integers(0, len(SLASH_WINDOWS) - 1),
        first=st.fixed_dictionaries(SESSION_ARGS),
        submitters=st.lists(ACTOR, max_size=8),
        fill=st.booleans(),
        slashes=st.integers(0, 2),
        finalize=st.booleans(),
        data=st.data(),
    )
    def use_deployment(
        self,
        which: int,
        first: dict[str, Any],
        submitters: list[int],
        fill: bool,
        slashes: int,
        finalize: bool,
        data: st.DataObject,
    ) -> None:
        """Pick a pre-deployed contract set (they differ in slash window); open a session.

        Hypothesis turns a random part of the rules off in each example; few examples
        would get as far as tokens, slashing after finalize and rewards on their own. So
        this opening sends, checked like any rule, submissions to the first session
        (with ``fill``, until it is full and training, no allow-list in the way), then
        maybe slashes and finalizes it.
        """
        deployed = self.deployed[which]
        self.contracts = Contracts.at(self.chain, deployed.deployment, self.deployer)
        self.coordinator = self.contracts.coordinator
        self.nft = self.contracts.model_nft
        self.window = deployed.deployment.slash_window
        self.enclaves = list(deployed.enclaves)
        assert self.chain.balance(self.coordinator.address) == 0
        assert self.coordinator.session_count() == 0
        if fill:
            first = {**first, "allow": None}
            submitters = submitters + list(range(N_ACTORS))
        self.create_session(variant="ok", **first)
        s = self.sessions[0]
        for who in submitters:
            if s.state != State.OPEN:
                break
            self._submit_one(s.sid, s, who=who, eligible=1, stake_delta=who, kind="ok")
        for _ in range(slashes):
            if s.state == State.TRAINING and _any_submitted(s):
                self._slash(s.sid, s, data)
        if finalize and self._can_finalize(s, self._tx_time()):
            self._finalize(s.sid, s, data)

    def _begin(self) -> None:
        """Start a step: what the invariants re-read is what this step touches."""
        self.step += 1
        self.dirty = set()
        self.touched = set()
        self.created = False
        self.tokens_dirty = False

    def _coordinator_as(self, account: LocalAccount) -> CoordinatorClient:
        key = str(account.address)
        if key not in self._coordinators:
            self._coordinators[key] = self.coordinator.as_account(account)
        return self._coordinators[key]

    def _nft_as(self, account: LocalAccount) -> ModelNftClient:
        key = str(account.address)
        if key not in self._nfts:
            self._nfts[key] = self.nft.as_account(account)
        return self._nfts[key]

    def _any(self, *states: State) -> bool:
        """Whether some session is in one of ``states`` (rule preconditions)."""
        return any(s.state in states for s in self.sessions)

    def _ready(self, can: Callable[[SessionModel, int], bool]) -> bool:
        """Whether ``can`` holds for some session now (rule preconditions)."""
        at = self._tx_time()
        return any(can(s, at) for s in self.sessions)

    # Which sessions a rule prefers at time ``at``: those it may succeed on, and those
    # one second past the deadline that stops it (or one second before the deadline
    # that allows it). A rule runs only when one exists, and still targets any session
    # (or none) now and then.

    def _can_submit(self, s: SessionModel, at: int) -> bool:
        return s.state == State.OPEN and at <= s.submit_deadline + 1

    def _can_close(self, s: SessionModel, at: int) -> bool:
        return s.state == State.OPEN and at >= s.submit_deadline

    def _can_expire(self, s: SessionModel, at: int) -> bool:
        return s.state == State.TRAINING and at >= s.training_deadline

    def _can_finalize(self, s: SessionModel, at: int) -> bool:
        return (
            s.state == State.TRAINING
            and at <= s.training_deadline + 1
            and s.enclave not in self.revoked
            and _any_submitted(s)
        )

    def _can_slash(self, s: SessionModel, at: int) -> bool:
        in_window = s.state == State.TRAINING or (
            s.state == State.FINALIZED and at <= s.finalized_at + self.window + 1
        )
        return in_window and _any_submitted(s)

    def _boundaries(self, s: SessionModel) -> list[int]:
        """The times at which what a transaction on ``s`` may do changes."""
        if s.state == State.OPEN:
            return [s.submit_deadline]
        if s.state == State.TRAINING:
            return [s.training_deadline]
        if s.state == State.FINALIZED and _any_submitted(s):
            return [s.finalized_at + self.window]
        return []

    def _someone_is_owed(self) -> bool:
        """Whether a claim now would pay or settle someone (the claim rule's precondition)."""
        if not self._any(State.FINALIZED, State.CANCELLED, State.EXPIRED):
            return False
        at = self._tx_time()
        return any(self._claimable(s, a, at) for s in self.sessions for a in self.addresses)

    def _tx_time(self) -> int:
        """The block timestamp the next transaction will execute at."""
        return self.latest + self.tx_offset

    def _session(
        self, pick: int, prefer: Callable[[SessionModel], bool] = lambda s: True
    ) -> tuple[int, SessionModel | None]:
        """A session the rule is likely to succeed on (mostly), any session, or an unknown id.

        ``None`` stands for an id no session has.
        """
        if not self.sessions or pick == UNKNOWN:
            return len(self.sessions) + 1, None
        preferred = [s for s in self.sessions if prefer(s)]
        choices = preferred if preferred and pick % 4 != 3 else self.sessions
        s = choices[pick % len(choices)]
        return s.sid, s

    def _expect(self, error: str | None, at: int, what: str, action: Callable[[], R]) -> R | None:
        """Run ``action``; it must revert with ``error``, or succeed at time ``at``."""
        if error is not None:
            try:
                action()
            except RevertError as exc:
                assert exc.error == error, f"{what}: expected {error}, reverted with {exc}"
                event(f"{what}: {error}")
                return None
            raise AssertionError(f"{what}: expected revert {error}, but it succeeded")
        try:
            result = action()
        except RevertError as exc:
            raise AssertionError(f"{what}: the model expected success, got {exc}") from exc
        assert self.chain.timestamp() == at, f"{what}: mined at an unexpected time"
        self.latest = at
        event(f"{what}: ok")
        return result

    def _advance_to(self, latest: int) -> None:
        """Move the latest block's timestamp to exactly ``latest`` (when in the future)."""
        before = self.latest
        if latest <= before:
            return
        self.chain.advance_time(latest - before)
        now = self.chain.timestamp()
        if now < latest:  # eth-tester's time travel lands one second short
            self.chain.advance_time(latest - now + 1)
            now = self.chain.timestamp()
        assert now == latest, f"could not move the clock to {latest}: it is {now}"
        self.latest = latest
        # Time changes what anyone may claim only where a slash window can end on a
        # contribution neither accepted nor slashed: re-read those sessions.
        self.dirty |= {
            s.sid for s in self.sessions if s.state == State.FINALIZED and _any_submitted(s)
        }

    # ------------------------------------------------------------- model math

    def _pool_final(self, s: SessionModel, now: int) -> bool:
        """Whether a finalized session's pool can no longer grow at time ``now``."""
        return s.state == State.FINALIZED and (
            not _any_submitted(s) or now > s.finalized_at + self.window
        )

    def _settles(self, s: SessionModel, account: str, now: int) -> bool:
        """Whether a claim by ``account`` at ``now`` settles its accepted contribution."""
        c = s.contributions.get(account)
        return (
            c is not None
            and c.status == Status.ACCEPTED
            and c.payout != Payout.SETTLED
            and self._pool_final(s, now)
        )

    def _due(self, s: SessionModel, account: str, now: int) -> tuple[int, int, int]:
        """(stake, reward, pool) that ``account`` may claim from ``s`` at time ``now``.

        A reward is the pool's share by weight, rounded down, less what was paid; the
        last accepted contributor to settle a final pool takes all of it not yet paid.
        """
        stake = reward = 0
        c = s.contributions.get(account)
        if c is not None:
            if s.state in (State.CANCELLED, State.EXPIRED):
                if c.status == Status.SUBMITTED:
                    stake = c.stake
            elif s.state == State.FINALIZED:
                if c.status == Status.ACCEPTED:
                    if c.payout == Payout.NONE:
                        stake = c.stake
                    if c.payout != Payout.SETTLED:
                        last = s.settled_count + 1 == len(s.accepted)
                        if self._pool_final(s, now) and last:
                            reward = s.pool - s.pool_paid
                        else:
                            reward = s.pool * c.weight // s.total_weight - c.reward_paid
                elif c.status == Status.SUBMITTED and now > s.finalized_at + self.window:
                    stake = c.stake
        pool = 0
        if account == s.owner and s.state in (State.CANCELLED, State.EXPIRED):
            pool = s.pool - s.pool_paid
        return stake, reward, pool

    def _owed(self, s: SessionModel, account: str, now: int) -> int:
        return sum(self._due(s, account, now))

    def _claimable(self, s: SessionModel, account: str, now: int) -> bool:
        """Whether a claim would succeed: it pays something, or it settles."""
        return self._owed(s, account, now) > 0 or self._settles(s, account, now)

    def _held(self, s: SessionModel) -> int:
        """Wei the Coordinator must still hold for ``s``: unpaid stakes and pool."""
        stakes = sum(
            c.stake
            for c in s.contributions.values()
            if c.status == Status.SUBMITTED
            or (c.status == Status.ACCEPTED and c.payout == Payout.NONE)
        )
        return stakes + s.pool - s.pool_paid

    def _slash_error(
        self, s: SessionModel | None, cert: RejectionCertificate, signed_by_enclave: bool, at: int
    ) -> str | None:
        if s is None:
            return "UnknownSession"
        if s.state == State.FINALIZED:
            if at > s.finalized_at + self.window:
                return "SlashWindowClosed"
        elif s.state != State.TRAINING:
            return "WrongState"
        if s.enclave in self.revoked:
            return "EnclaveRevoked"
        if not signed_by_enclave:
            return "InvalidSignature"
        c = s.contributions.get(cert.contributor)
        status = c.status if c is not None else Status.NONE
        if status == Status.SLASHED:
            return "AlreadySlashed"
        if c is None or status != Status.SUBMITTED:
            return "NotEligible"
        if c.ciphertext != cert.ciphertext_hash:
            return "CiphertextMismatch"
        return None

    def _apply_slash(self, s: SessionModel, used: UsedCertificate, amount: int) -> None:
        digest = used.certificate.digest(self.coordinator.domain())
        assert digest not in self.slashing_digests, "a certificate slashed twice"
        self.slashing_digests.add(digest)
        self.used_certificates.append(used)
        c = s.contributions[used.certificate.contributor]
        assert amount == c.stake, "Slashed event names the wrong amount"
        c.status = Status.SLASHED
        s.slashed_count += 1
        s.pool += c.stake
        self.dirty.add(s.sid)
        self.touched.add((s.sid, used.certificate.contributor))

    # ------------------------------------------------------------------ rules

    @rule(
        variant=mostly(
            "ok",
            "bad_measurement",
            "unknown_enclave",
            "zero_quorum",
            "quorum_above_max",
            "max_most",
            "max_over",
            "submit_deadline_now",
            "training_deadline_at_submit",
        ),
        **SESSION_ARGS,
    )
    def create_session(
        self,
        owner: int,
        enclave: int,
        variant: str,
        quorum: int,
        extra: int,
        min_stake: int,
        pool: int,
        submit_in: int,
        train_in: int,
        allow: list[int] | None,
    ) -> None:
        self._begin()
        at = self._tx_time()
        e = self.enclaves[enclave]
        max_contributors = quorum + extra
        if variant == "zero_quorum":
            quorum = 0
        elif variant == "quorum_above_max":
            quorum, max_contributors = quorum + 1, quorum
        elif variant == "max_most":
            max_contributors = MAX_CONTRIBUTORS
        elif variant == "max_over":
            max_contributors = MAX_CONTRIBUTORS + 1
        elif variant == "submit_deadline_now":
            submit_in = 0
        elif variant == "training_deadline_at_submit":
            train_in = 0
        allow_list = [self.addresses[i] for i in allow or []]
        params = SessionParams(
            enclave_id=e.enclave_id if variant != "unknown_enclave" else len(self.enclaves) + 7,
            measurement=e.measurement if variant != "bad_measurement" else keccak(b"other"),
            quorum=quorum,
            max_contributors=max_contributors,
            submit_deadline=at + submit_in,
            training_deadline=at + submit_in + train_in,
            min_stake=min_stake,
            allow_list=allow_list,
        )
        error: str | None = None
        if variant == "unknown_enclave":
            error = "UnknownEnclave"
        elif enclave in self.revoked:
            error = "EnclaveRevoked"
        elif variant == "bad_measurement":
            error = "MeasurementMismatch"
        elif quorum == 0 or quorum > max_contributors or max_contributors > MAX_CONTRIBUTORS:
            error = "InvalidQuorum"
        elif submit_in == 0 or train_in == 0:
            error = "InvalidDeadlines"
        if error is None and len(self.sessions) >= MAX_SESSIONS:
            # Rather than a precondition: Hypothesis discards an example (and the work
            # done in it) once every rule it enabled has a false precondition.
            return
        self.created = True
        client = self._coordinator_as(self.actors[owner])
        sid = self._expect(
            error,
            at,
            "createSession",
            lambda: client.create_session(params, reward_pool=pool),
        )
        if sid is None:
            return
        assert sid == len(self.sessions) + 1
        self.sessions.append(
            SessionModel(
                sid=sid,
                owner=self.addresses[owner],
                enclave=enclave,
                quorum=quorum,
                max_contributors=max_contributors,
                min_stake=min_stake,
                submit_deadline=params.submit_deadline,
                training_deadline=params.training_deadline,
                allow_list=frozenset(allow_list) if allow_list else None,
                pool=pool,
            )
        )
        self.deposited += pool
        self.dirty.add(sid)

    @precondition(lambda self: self._ready(self._can_submit))
    @rule(pick=PICK, data=st.data())
    def submit(self, pick: int, data: st.DataObject) -> None:
        """One to three submissions to a session, most from accounts that may submit."""
        self._begin()
        at = self._tx_time()
        sid, s = self._session(pick, lambda s: self._can_submit(s, at))
        for _ in range(data.draw(st.integers(1, 3), label="submissions")):
            self._submit_one(
                sid,
                s,
                who=data.draw(ACTOR, label="who"),
                eligible=data.draw(st.integers(0, 3), label="eligible"),
                stake_delta=data.draw(
                    st.one_of(st.integers(-2, 2), st.integers(0, 10**6)), label="stake delta"
                ),
                kind=data.draw(
                    mostly("ok", "zero_ciphertext", "empty_key", "small_order_key"), label="kind"
                ),
            )

    def _submit_one(
        self, sid: int, s: SessionModel | None, who: int, eligible: int, stake_delta: int, kind: str
    ) -> None:
        at = self._tx_time()
        account = self.addresses[who]
        if s is not None and eligible:
            allowed = [
                a
                for a in self.addresses
                if a not in s.contributions and (s.allow_list is None or a in s.allow_list)
            ]
            if allowed:
                account = allowed[who % len(allowed)]
        stake = max(0, (s.min_stake if s else 0) + stake_delta)
        ciphertext = keccak(text=f"ciphertext {sid} {account}")
        if kind == "zero_ciphertext":
            ciphertext = bytes(32)
        hpke = {"empty_key": b"", "small_order_key": b"\x00\x20\x01" + bytes(31)}.get(
            kind, b"\x00\x20" + keccak(text=account)
        )
        error: str | None = None
        if s is None:
            error = "UnknownSession"
        elif s.state != State.OPEN:
            error = "WrongState"
        elif at > s.submit_deadline:
            error = "SubmitDeadlinePassed"
        elif s.allow_list is not None and account not in s.allow_list:
            error = "NotAllowListed"
        elif kind == "zero_ciphertext":
            error = "EmptyCiphertextHash"
        elif kind == "empty_key":
            error = "InvalidHpkeKey"
        elif kind == "small_order_key":
            error = "SmallOrderX25519Key"
        elif stake < s.min_stake:
            error = "StakeTooLow"
        elif account in s.contributions:
            error = "AlreadySubmitted"
        client = self._coordinator_as(self.keys[account])
        done = self._expect(
            error, at, "submit", lambda: client.submit(sid, ciphertext, hpke, stake=stake)
        )
        if done is None:
            return
        assert s is not None
        s.contributions[account] = ContributionModel(stake, ciphertext)
        s.submitted += 1
        if s.submitted == s.max_contributors:
            s.state = State.TRAINING
        self.deposited += stake
        self.dirty.add(sid)
        self.touched.add((sid, account))

    @precondition(lambda self: self._ready(self._can_close))
    @rule(pick=PICK, who=ACTOR, race=mostly("close", "owner_cancels"))
    def close(self, pick: int, who: int, race: str) -> None:
        """Close a session past its submit deadline, or have its owner race to cancel it."""
        self._begin()
        at = self._tx_time()
        sid, s = self._session(pick, lambda s: self._can_close(s, at))
        if race == "owner_cancels":
            self._cancel(sid, s, who, "owner")
        else:
            self._close(sid, s, who)

    def _close(self, sid: int, s: SessionModel | None, who: int) -> None:
        at = self._tx_time()
        error: str | None = None
        if s is None:
            error = "UnknownSession"
        elif s.state != State.OPEN:
            error = "WrongState"
        elif at <= s.submit_deadline:
            error = "SubmitDeadlineNotReached"
        client = self._coordinator_as(self.actors[who])
        if self._expect(error, at, "close", lambda: client.close(sid)) is None:
            return
        assert s is not None
        s.state = State.TRAINING if s.submitted >= s.quorum else State.EXPIRED
        self.dirty.add(sid)

    @precondition(lambda self: self.sessions)
    @rule(pick=PICK, who=ACTOR, by=mostly("anyone", "owner", odds=1))
    def cancel(self, pick: int, who: int, by: str) -> None:
        self._begin()
        sid, s = self._session(pick, lambda s: s.state == State.OPEN)
        self._cancel(sid, s, who, by)

    def _cancel(self, sid: int, s: SessionModel | None, who: int, by: str) -> None:
        at = self._tx_time()
        caller = self.actors[who]
        if by == "owner" and s is not None:
            caller = self.keys[s.owner]
        error: str | None = None
        if s is None:
            error = "UnknownSession"
        elif str(caller.address) != s.owner:
            error = "NotSessionOwner"
        elif s.state != State.OPEN:
            error = "WrongState"
        elif at > s.submit_deadline and s.submitted >= s.quorum:
            error = "CancelAfterQuorum"  # only close() may move it now
        client = self._coordinator_as(caller)
        if self._expect(error, at, "cancel", lambda: client.cancel(sid)) is None:
            return
        assert s is not None
        s.state = State.CANCELLED
        self.dirty.add(sid)

    @precondition(lambda self: self._ready(self._can_expire))
    @rule(pick=PICK, who=ACTOR)
    def expire(self, pick: int, who: int) -> None:
        self._begin()
        at = self._tx_time()
        sid, s = self._session(pick, lambda s: self._can_expire(s, at))
        self._expire(sid, s, who)

    def _expire(self, sid: int, s: SessionModel | None, who: int) -> None:
        at = self._tx_time()
        error: str | None = None
        if s is None:
            error = "UnknownSession"
        elif s.state != State.TRAINING:
            error = "WrongState"
        elif at <= s.training_deadline:
            error = "TrainingDeadlineNotReached"
        client = self._coordinator_as(self.actors[who])
        if self._expect(error, at, "expire", lambda: client.expire(sid)) is None:
            return
        assert s is not None
        s.state = State.EXPIRED
        self.dirty.add(sid)

    @precondition(lambda self: self._ready(self._can_finalize))
    @rule(pick=PICK, data=st.data())
    def finalize(self, pick: int, data: st.DataObject) -> None:
        self._begin()
        at = self._tx_time()
        sid, s = self._session(pick, lambda s: self._can_finalize(s, at))
        self._finalize(sid, s, data)

    def _finalize(self, sid: int, s: SessionModel | None, data: st.DataObject) -> None:
        enclave = self.enclaves[s.enclave if s is not None else 0]
        sender_kind = data.draw(mostly("enclave", "other_enclave", "actor", odds=5), label="sender")
        if sender_kind == "other_enclave":
            sender = self.enclaves[1 - self.enclaves.index(enclave)].account
        elif sender_kind == "actor":
            sender = self.actors[data.draw(ACTOR, label="actor")]
        else:
            sender = enclave.account
        candidates = sorted(
            a for a, c in (s.contributions.items() if s else ()) if c.status == Status.SUBMITTED
        )
        accepted: list[str] = []
        if candidates:
            accepted = data.draw(
                st.lists(st.sampled_from(candidates), unique=True, min_size=1), label="accepted"
            )
        flaw = data.draw(
            mostly(
                "none",
                "empty",
                "outsider",
                "duplicate",
                "not_submitted",
                "zero_weight",
                "short_keys",
                odds=4,
            ),
            label="flaw",
        )
        if flaw == "empty":
            accepted = []
        elif flaw == "outsider":
            outsiders = [a for a in self.addresses if s is None or a not in s.contributions]
            if outsiders:
                where = data.draw(st.integers(0, len(accepted)), label="where")
                accepted.insert(where, data.draw(st.sampled_from(outsiders), label="outsider"))
        elif flaw == "duplicate" and accepted:
            accepted.append(accepted[data.draw(st.integers(0, len(accepted) - 1), label="dup")])
        elif flaw == "not_submitted" and s is not None:
            others = sorted(a for a, c in s.contributions.items() if c.status != Status.SUBMITTED)
            if others:
                accepted.insert(0, data.draw(st.sampled_from(others), label="not submitted"))
        weights = data.draw(
            st.lists(WEIGHT, min_size=len(accepted), max_size=len(accepted)), label="weights"
        )
        if flaw == "zero_weight" and weights:
            weights[data.draw(st.integers(0, len(weights) - 1), label="zero at")] = 0
        sealed_keys = [b"sealed " + keccak(text=f"{sid} {a}") for a in accepted]
        if flaw == "short_keys" and sealed_keys:
            sealed_keys.pop()
        at = self._tx_time()
        error: str | None = None
        if s is None:
            error = "UnknownSession"
        elif s.state != State.TRAINING:
            error = "WrongState"
        elif sender.address != enclave.account.address:
            error = "NotEnclaveSigner"
        elif s.enclave in self.revoked:
            error = "EnclaveRevoked"
        elif at > s.training_deadline:
            error = "TrainingDeadlinePassed"
        elif not accepted:
            error = "NoAcceptedContributors"
        elif len(sealed_keys) != len(accepted):
            error = "LengthMismatch"
        else:
            seen: set[str] = set()
            for account, weight in zip(accepted, weights, strict=True):
                c = s.contributions.get(account)
                if c is None or c.status != Status.SUBMITTED or account in seen:
                    error = "NotEligible"
                    break
                if weight == 0:
                    error = "ZeroWeight"
                    break
                seen.add(account)
        model_hash = keccak(text=f"model {sid}")
        manifest_hash = keccak(text=f"manifest {sid}")
        client = self._coordinator_as(sender)
        result = self._expect(
            error,
            at,
            "finalize",
            lambda: client.finalize(sid, model_hash, manifest_hash, accepted, weights, sealed_keys),
        )
        if result is None:
            return
        assert s is not None
        s.state = State.FINALIZED
        s.finalized_at = at
        s.accepted = list(accepted)
        s.total_weight = sum(weights)
        for index, (account, weight) in enumerate(zip(accepted, weights, strict=True)):
            c = s.contributions[account]
            c.status = Status.ACCEPTED
            c.weight = weight
            token_id = self.nft.token_id_for(sid, index)
            s.holders[token_id] = account
            s.nonces[token_id] = 0
        # One token per accepted contributor, minted to it, with its sealed key.
        token_ids = [self.nft.token_id_for(sid, i) for i in range(len(accepted))]
        assert [
            (e.contributor, e.weight, e.token_id) for e in result.all(ContributionAccepted)
        ] == [*zip(accepted, weights, token_ids, strict=True)]
        assert [(e.token_id, e.holder, e.sealed_key) for e in result.all(PublishedSealedKey)] == [
            *zip(token_ids, accepted, sealed_keys, strict=True)
        ]
        record = self.nft.session_model(sid)
        assert (record.model_hash, record.enclave_id, record.token_count) == (
            model_hash,
            enclave.enclave_id,
            len(accepted),
        )
        with pytest.raises(RevertError) as missing:
            self.nft.owner_of(self.nft.token_id_for(sid, len(accepted)))
        assert missing.value.error == "ERC721NonexistentToken"
        self.dirty.add(sid)
        self.touched |= {(sid, a) for a in accepted}
        self.tokens_dirty = True

    @precondition(
        lambda self: len(self.used_certificates) < MAX_SLASHES and self._ready(self._can_slash)
    )
    @rule(pick=PICK, data=st.data())
    def slash_with_proof(self, pick: int, data: st.DataObject) -> None:
        self._begin()
        at = self._tx_time()
        sid, s = self._session(pick, lambda s: self._can_slash(s, at))
        self._slash(sid, s, data)

    def _slash(self, sid: int, s: SessionModel | None, data: st.DataObject) -> None:
        at = self._tx_time()
        whom = data.draw(mostly("submitted", "any_contributor", "stranger"), label="whom")
        contributors = sorted(s.contributions) if s is not None else []
        if whom == "submitted" and s is not None:
            contributors = [
                a for a in contributors if s.contributions[a].status == Status.SUBMITTED
            ]
        if contributors and whom != "stranger":
            target = data.draw(st.sampled_from(contributors), label="contributor")
        else:
            target = self.addresses[data.draw(ACTOR, label="stranger")]
        variant = data.draw(
            mostly("valid", "wrong_signer", "wrong_domain", "wrong_ciphertext"), label="variant"
        )
        committed = s.contributions.get(target) if s is not None else None
        ciphertext = committed.ciphertext if committed else keccak(text=f"never {target}")
        if variant == "wrong_ciphertext":
            ciphertext = keccak(b"not what was committed" + ciphertext)
        cert = RejectionCertificate(
            session_id=sid,
            contributor=target,
            ciphertext_hash=ciphertext,
            reason_code=data.draw(st.integers(0, 2**16 - 1), label="reason"),
            score=data.draw(st.integers(-(2**63), 2**63 - 1), label="score"),
            evidence_hash=keccak(text=f"evidence {self.step}"),
        )
        enclave_index = s.enclave if s is not None else 0
        signer = self.enclaves[enclave_index].account
        domain = self.coordinator.domain()
        if variant == "wrong_signer":
            signer = self.enclaves[1 - enclave_index].account
        elif variant == "wrong_domain":
            domain = coordinator_domain(self.chain.chain_id, self.nft.address)
        signature = cert.sign(signer, domain)
        error = self._slash_error(s, cert, variant in ("valid", "wrong_ciphertext"), at)
        client = self._coordinator_as(self.actors[data.draw(ACTOR, label="caller")])
        result = self._expect(
            error, at, "slashWithProof", lambda: client.slash_with_proof(cert, signature)
        )
        if result is None:
            return
        assert s is not None
        self._apply_slash(s, UsedCertificate(cert, signature), result.first(Slashed).amount)

    @precondition(lambda self: self.used_certificates)
    @rule(index=st.integers(0, 50), who=ACTOR)
    def replay_certificate(self, index: int, who: int) -> None:
        """A certificate that slashed once never slashes again."""
        self._begin()
        used = self.used_certificates[index % len(self.used_certificates)]
        s = self.sessions[used.certificate.session_id - 1]
        at = self._tx_time()
        error = self._slash_error(s, used.certificate, True, at)
        assert error is not None, "the model would let a certificate slash twice"
        client = self._coordinator_as(self.actors[who])
        self._expect(
            error,
            at,
            "slashWithProof (replayed)",
            lambda: client.slash_with_proof(used.certificate, used.signature),
        )

    @precondition(lambda self: self._someone_is_owed())
    @rule(pick=PICK, who=ACTOR)
    def claim(self, pick: int, who: int) -> None:
        self._begin()
        at = self._tx_time()
        sid, s = self._session(pick)
        account = self.addresses[who]
        owed = [(t, a) for t in self.sessions for a in self.addresses if self._claimable(t, a, at)]
        if owed and pick % 4 != 3 and pick != UNKNOWN:
            s, account = owed[(pick + who) % len(owed)]
            sid = s.sid
        self._claim(sid, s, account)

    def _claim(self, sid: int, s: SessionModel | None, account: str) -> None:
        at = self._tx_time()
        client = self._coordinator_as(self.keys[account])
        stake = reward = pool = 0
        settles = False
        if s is not None:
            stake, reward, pool = self._due(s, account, at)
            settles = self._settles(s, account, at)
        amount = stake + reward + pool
        error = None
        if s is None:
            error = "UnknownSession"
        elif amount == 0 and not settles:
            error = "NothingToClaim"
        got = self._expect(error, at, "claim", lambda: client.claim(sid))
        if got is None:
            return
        assert s is not None
        assert got == amount, f"claimed {got}, the model expected {amount}"
        c = s.contributions.get(account)
        if stake:
            assert c is not None
            if c.status == Status.ACCEPTED:
                c.payout = Payout.STAKE_RETURNED
            else:
                c.status = Status.REFUNDED
        if settles:
            assert c is not None
            c.payout = Payout.SETTLED
            s.settled_count += 1
            event("claim: settled" + (" last" if s.settled_count == len(s.accepted) else ""))
        if reward:
            assert c is not None
            c.reward_paid += reward
        s.pool_paid += reward + pool
        self.withdrawn += amount
        self.dirty.add(sid)
        self.touched.add((sid, account))
        # Nobody claims twice: right after a claim there is nothing left to take (unless
        # the pool became final in between, which lets an accepted contributor settle).
        again = self._tx_time()
        if self._pool_final(s, again) != self._pool_final(s, at):
            return
        assert not self._claimable(s, account, again), "the model lets an account claim twice"
        self._expect("NothingToClaim", again, "claim again", lambda: client.claim(sid))

    @rule(
        how=st.sampled_from(["to_deadline", "by"]),
        seconds=st.one_of(st.integers(1, 10), st.integers(1, 700)),
        index=st.integers(0, 5),
        offset=st.integers(-1, 1),
        data=st.data(),
    )
    def advance_time(
        self, how: str, seconds: int, index: int, offset: int, data: st.DataObject
    ) -> None:
        """Move the clock by some seconds, or to a coming deadline and act there.

        ``to_deadline`` lands the next transaction ``offset`` seconds from the
        ``index``-th nearest coming deadline and sends the call that deadline governs:
        at a submit deadline submit, close or cancel (as the owner), at a training
        deadline finalize or expire, at the end of a slash window slash or claim (as a
        contribution neither accepted nor slashed).
        """
        self._begin()
        if how == "by":
            self._advance_to(self.latest + seconds)
            return
        ahead = self.latest + self.tx_offset - offset
        coming = sorted(
            (b, s.sid) for s in self.sessions for b in self._boundaries(s) if b >= ahead
        )
        if not coming:
            self._advance_to(self.latest + seconds)
            return
        boundary, sid = coming[index % len(coming)]
        s = self.sessions[sid - 1]
        self._advance_to(boundary + offset - self.tx_offset)
        first = data.draw(st.booleans(), label="first action")
        who = data.draw(ACTOR, label="who")
        if s.state == State.OPEN:
            if first:
                self._submit_one(sid, s, who=who, eligible=1, stake_delta=0, kind="ok")
            elif data.draw(st.booleans(), label="cancel"):
                self._cancel(sid, s, who, "owner")
            else:
                self._close(sid, s, who)
        elif s.state == State.TRAINING:
            if first:
                self._finalize(sid, s, data)
            else:
                self._expire(sid, s, who)
        elif first and len(self.used_certificates) < MAX_SLASHES:
            self._slash(sid, s, data)
        else:
            waiting = sorted(a for a, c in s.contributions.items() if c.status == Status.SUBMITTED)
            self._claim(sid, s, waiting[who % len(waiting)])

    @precondition(
        lambda self: len(self.proofs) < MAX_TRANSFERS and any(s.holders for s in self.sessions)
    )
    @rule(data=st.data())
    def transfer_token(self, data: st.DataObject) -> None:
        """Move a model token with the enclave's re-seal proof (or fail to)."""
        self._begin()
        tokens = sorted((t, s.sid) for s in self.sessions for t in s.holders)
        token_id, sid = data.draw(st.sampled_from(tokens), label="token")
        s = self.sessions[sid - 1]
        receivers = [a for a in self.addresses if a not in s.contributions]
        if not receivers:
            return
        receiver = data.draw(st.sampled_from(receivers), label="receiver")
        holder = s.holders[token_id]
        others = [a for a in self.addresses if a != holder]
        variant = data.draw(
            mostly(
                "ok",
                "stale_proof",
                "wrong_signer",
                "not_holder",
                "wrong_from",
                "empty_key",
                "no_such_token",
            ),
            label="variant",
        )
        enclave = self.enclaves[s.enclave].account
        caller, sender, tid = self.keys[holder], holder, token_id
        sealed_key = b"resealed " + keccak(text=f"{token_id} {receiver} {self.step}")
        stale = [p for p in self.proofs if p.token_id == token_id]
        signer = enclave
        proof: bytes | None = None
        error: str | None = None
        if variant == "stale_proof" and stale:
            old = stale[data.draw(st.integers(0, len(stale) - 1), label="stale")]
            sender, receiver, sealed_key = old.sender, old.receiver, old.sealed_key
            proof = old.proof
            error = "InvalidResealProof"
        elif variant == "wrong_signer":
            signer = self.enclaves[1 - s.enclave].account
            error = "InvalidResealProof"
        elif variant == "not_holder":
            caller = self.keys[data.draw(st.sampled_from(others), label="caller")]
            error = "ERC721InsufficientApproval"
        elif variant == "wrong_from":
            sender = data.draw(st.sampled_from(others), label="from")
            error = "ERC721IncorrectOwner"
        elif variant == "empty_key":
            sealed_key = b""
            error = "EmptySealedKey"
        elif variant == "no_such_token":
            tid = self.nft.token_id_for(s.sid, len(s.accepted))
            error = "ERC721NonexistentToken"
        if s.enclave in self.revoked and variant != "empty_key":
            error = "EnclaveRevoked"  # its proofs, old or new, move nothing
        if proof is None:
            proof = sign_reseal_statement(
                signer,
                model_nft_domain(self.chain.chain_id, self.nft.address),
                token_id=tid,
                sender=sender,
                receiver=receiver,
                sealed_key=sealed_key,
                transfer_nonce=s.nonces.get(tid, 0),
            )
        signed = proof
        at = self._tx_time()
        client = self._nft_as(caller)
        result = self._expect(
            error,
            at,
            "iTransferFrom",
            lambda: client.i_transfer_from(sender, receiver, tid, sealed_key, signed),
        )
        if result is None:
            return
        published = result.first(PublishedSealedKey)
        assert (published.token_id, published.holder, published.sealed_key) == (
            token_id,
            receiver,
            sealed_key,
        )
        s.holders[token_id] = receiver
        s.nonces[token_id] += 1
        self.proofs.append(UsedProof(token_id, sender, receiver, sealed_key, signed))
        self.tokens_dirty = True

    @precondition(
        lambda self: (
            1 not in self.revoked
            and any(
                s.enclave == 1 and s.state in (State.TRAINING, State.FINALIZED)
                for s in self.sessions
            )
        )
    )
    @rule()
    def revoke_enclave(self) -> None:
        """The registry admin revokes the second enclave once one of its sessions trained.

        Its sessions can then neither finalize nor slash, no new one opens on it, and the
        model tokens of its finalized sessions no longer move.
        """
        self._begin()
        registry = self.contracts.registry
        enclave_id = self.enclaves[1].enclave_id
        self._expect(None, self._tx_time(), "revoke", lambda: registry.revoke(enclave_id))
        self.revoked.add(1)
        self._expect(
            "AlreadyRevoked", self._tx_time(), "revoke", lambda: registry.revoke(enclave_id)
        )

    # ------------------------------------------------------------- invariants
    #
    # Chain reads cost milliseconds each, so the per-session checks re-read what the
    # step could have changed: the sessions it touched (state, and claimable for the
    # owner, every contributor and one stranger in turn), the contributions it touched,
    # and after a time jump the finalized sessions with contributions whose slash
    # window may have ended. Every few steps one session, in turn, gets every check,
    # claimable for every account included.

    def _rotating(self) -> SessionModel | None:
        """Every few steps, one session (in turn) that gets every check."""
        if not self.sessions or self.step % ROTATE_EVERY:
            return None
        return self.sessions[(self.step // ROTATE_EVERY) % len(self.sessions)]

    def _checked_sessions(self) -> list[SessionModel]:
        rotating = self._rotating()
        return [s for s in self.sessions if s.sid in self.dirty or s is rotating]

    def _parties(self, s: SessionModel) -> list[str]:
        stranger = [a for a in self.addresses if a != s.owner and a not in s.contributions]
        parties = [s.owner, *sorted(a for a in s.contributions if a != s.owner)]
        if stranger:
            parties.append(stranger[self.step % len(stranger)])
        return parties

    @invariant()
    def coordinator_holds_exactly_what_it_owes(self) -> None:
        """Its balance is the unpaid stakes plus unpaid pools, dust included."""
        if not self.enclaves:
            return
        balance = self.chain.balance(self.coordinator.address)
        owed = sum(self._held(s) for s in self.sessions)
        assert balance == owed, f"Coordinator holds {balance} wei but owes {owed}"
        assert balance == self.deposited - self.withdrawn, "wei in minus wei out differs"

    @invariant()
    def claims_never_exceed_the_balance(self) -> None:
        """What everyone may claim now fits in what the Coordinator holds."""
        if not self.enclaves:
            return
        now = self.latest
        for s in self.sessions:
            due = sum(self._owed(s, a, now) for a in self.addresses)
            assert due <= self._held(s), f"session {s.sid} owes {due} but holds {self._held(s)}"

    @invariant()
    def settled_sessions_leave_no_dust(self) -> None:
        """Once every accepted contributor settled, the whole pool has been paid out."""
        for s in self.sessions:
            if s.state == State.FINALIZED and s.settled_count == len(s.accepted):
                assert s.pool_paid == s.pool, f"session {s.sid} keeps {s.pool - s.pool_paid} wei"
                paid = sum(s.contributions[a].reward_paid for a in s.accepted)
                assert paid == s.pool, f"session {s.sid} paid {paid} of its {s.pool} wei pool"

    @invariant()
    def session_states_match(self) -> None:
        if not self.enclaves:
            return
        for s in self._checked_sessions():
            info = self.coordinator.session(s.sid)
            assert info.state == s.state, f"session {s.sid}: {info.state!r}, model {s.state!r}"
            assert (info.owner, info.submitted, info.pool, info.pool_paid) == (
                s.owner,
                s.submitted,
                s.pool,
                s.pool_paid,
            )
            assert (info.slashed_count, info.settled_count) == (s.slashed_count, s.settled_count)
            assert (info.finalized_at, info.accepted_count, info.total_weight) == (
                s.finalized_at,
                len(s.accepted),
                s.total_weight,
            )
            assert (info.submit_deadline, info.training_deadline, info.quorum) == (
                s.submit_deadline,
                s.training_deadline,
                s.quorum,
            )
        if self.created:
            assert self.coordinator.session_count() == len(self.sessions)

    @invariant()
    def claimable_matches_model(self) -> None:
        if not self.enclaves:
            return
        now = self.latest
        rotating = self._rotating()
        for s in self._checked_sessions():
            for account in self.addresses if s is rotating else self._parties(s):
                expected = self._owed(s, account, now)
                got = self.coordinator.claimable(s.sid, account)
                assert got == expected, (
                    f"claimable({s.sid}, {account}) = {got}, the model expects {expected}"
                )

    @invariant()
    def contributions_match_model(self) -> None:
        if not self.enclaves:
            return
        pairs = set(self.touched)
        rotating = self._rotating()
        if rotating is not None:
            pairs |= {(rotating.sid, a) for a in self._parties(rotating)}
        for sid, account in sorted(pairs):
            info = self.coordinator.contribution(sid, account)
            c = self.sessions[sid - 1].contributions.get(account)
            if c is None:
                assert info.status == Status.NONE and info.stake == 0
                continue
            assert (
                info.status,
                info.stake,
                info.weight,
                info.reward_paid,
                info.payout,
                info.ciphertext_hash,
            ) == (c.status, c.stake, c.weight, c.reward_paid, c.payout, c.ciphertext)

    @invariant()
    def slashed_certificates_stay_slashed(self) -> None:
        """Each certificate slashed once; its contributor is Slashed and owed nothing."""
        assert len(self.slashing_digests) == len(self.used_certificates)
        now = self.latest
        for used in self.used_certificates:
            s = self.sessions[used.certificate.session_id - 1]
            c = s.contributions[used.certificate.contributor]
            assert c.status == Status.SLASHED
            stake, reward, _ = self._due(s, used.certificate.contributor, now)
            assert stake == reward == 0

    @invariant()
    def tokens_match_model(self) -> None:
        """One token per accepted contributor; tokens never sit with the slashed."""
        if not self.enclaves:
            return
        for s in self.sessions:
            slashed = {a for a, c in s.contributions.items() if c.status == Status.SLASHED}
            assert len(s.holders) == len(s.accepted)
            for index, account in enumerate(s.accepted):
                assert s.contributions[account].status == Status.ACCEPTED
                assert self.nft.token_id_for(s.sid, index) in s.holders
            for holder in s.holders.values():
                assert holder not in slashed, "a slashed contributor holds a model token"
                c = s.contributions.get(holder)
                assert c is None or c.status == Status.ACCEPTED
        if not self.tokens_dirty:
            return
        counts = dict.fromkeys(self.addresses, 0)
        for s in self.sessions:
            for token_id, holder in s.holders.items():
                owner = self.nft.owner_of(token_id)
                assert owner == holder, f"token {token_id} is {owner}'s, the model says {holder}'s"
                nonce = self.nft.transfer_nonce(token_id)
                assert nonce == s.nonces[token_id], f"token {token_id} transfer nonce {nonce}"
                counts[holder] += 1
        for account, count in counts.items():
            balance = self.nft.balance_of(account)
            assert balance == count, f"{account} holds {balance} model tokens, not {count}"


# ----------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def embedded_stage() -> Stage:
    """The embedded EVM, its clock far ahead of the wall clock, with contracts deployed.

    With the clock ahead, each block is exactly one second after its parent.
    """
    chain = connect("embedded")
    chain.advance_time(10**7)
    return Stage(chain)


@pytest.fixture(scope="module")
def anvil_stage() -> Iterator[Stage]:
    """A private anvil whose clock moves only when a test moves it."""
    port = free_port()
    proc = start_anvil(port)
    try:
        chain = connect(f"http://127.0.0.1:{port}")
        chain.w3.provider.make_request("anvil_setBlockTimestampInterval", [0])  # type: ignore[arg-type]
        yield Stage(chain)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
@pytest.mark.timeout(SHRINK_TIMEOUT_S)
def test_coordinator_state_machine_embedded(embedded_stage: Stage) -> None:
    in_fresh_thread(
        lambda: run_state_machine_as_test(
            lambda: CoordinatorMachine(embedded_stage.fresh_chain(), embedded_stage.deployed),
            settings=EMBEDDED_SETTINGS,
        )
    )


@pytest.mark.slow
@pytest.mark.timeout(SHRINK_TIMEOUT_S)
def test_coordinator_state_machine_anvil(anvil_stage: Stage) -> None:
    in_fresh_thread(
        lambda: run_state_machine_as_test(
            lambda: CoordinatorMachine(anvil_stage.fresh_chain(), anvil_stage.deployed),
            settings=ANVIL_SETTINGS,
        )
    )
