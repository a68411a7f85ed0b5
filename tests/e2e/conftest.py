"""End-to-end fixtures: an embedded chain, a local store and a registered dev enclave.

One chain, deployment, store and aggregator serve every test of a module (each scenario
opens its own session); one ``BaseModels`` serves the whole run, so the tiny base model
is built and loaded once. Sessions train cheaply: one epoch over 60 examples per
contributor.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cotune.aggregator.bindings import submission_info
from cotune.aggregator.pipeline import BaseModels
from cotune.aggregator.service import Aggregator, AggregatorConfig
from cotune.aggregator.spec import SessionSpec
from cotune.aggregator.state import SessionRecord, Stage
from cotune.chain.clients.coordinator import ContributionStatus, SessionInfo, SessionState
from cotune.chain.connection import Chain, connect
from cotune.chain.deployment import Deployment, deploy_all
from cotune.chain.devnet import free_port, start_anvil
from cotune.chain.transactions import TxResult
from cotune.crypto.identity import Identity
from cotune.crypto.stream import encrypt_stream
from cotune.sdk.client import Client, SessionOptions, SubmitResult
from cotune.sdk.demo import tree_sha256
from cotune.storage.local import LocalStore
from cotune.training.config import LoraHyperparams
from cotune.training.gate import Reason
from cotune.training.synthetic import DemoData, demo_data

ETHER = 10**18
MIN_STAKE = ETHER // 10
EXAMPLES_PER_CONTRIBUTOR = 60
CHEAP_SPEC = SessionSpec(hyperparams=LoraHyperparams(epochs=1))


def jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    """Records one per line, the way the demo writes them."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


@dataclass
class Party:
    """One contributor: its identity and its client."""

    identity: Identity
    client: Client

    @property
    def address(self) -> str:
        return self.identity.address

    @property
    def hpke_public(self) -> bytes:
        return self.identity.hpke.public_key().to_bytes()


@dataclass
class Session:
    """An opened session and the contributors on its allow-list."""

    env: Env
    session_id: int
    parties: list[Party]

    # ---- contributing ---------------------------------------------------------------------

    def submit_clean(self, party: Party, data: bytes) -> SubmitResult:
        """Submit through the SDK, as an honest contributor does."""
        return party.client.submit(self.session_id, data, pinned_measurement=self.env.measurement)

    def encrypt(
        self,
        party: Party,
        plaintext: bytes,
        *,
        session_id: int | None = None,
        contributor: str | None = None,
    ) -> bytes:
        """``plaintext`` encrypted to the enclave, bound to this session and ``party``.

        Override ``session_id`` or ``contributor`` to bind it to another context.
        """
        info = submission_info(
            self.env.chain.chain_id,
            self.env.deployment.coordinator,
            self.session_id if session_id is None else session_id,
            contributor or party.address,
        )
        enclave = party.client.verify_enclave(self.env.enclave_id, self.env.measurement)
        sink = io.BytesIO()
        encrypt_stream(io.BytesIO(plaintext), sink, enclave.hpke_public_key, info)
        return sink.getvalue()

    def commit_raw(self, party: Party, ciphertext_hash: bytes) -> TxResult:
        """Commit a hash straight through the contract, skipping every SDK check."""
        return party.client.contracts.coordinator.submit(
            self.session_id, ciphertext_hash, party.hpke_public, stake=MIN_STAKE
        )

    def upload_and_commit(self, party: Party, ciphertext: bytes) -> bytes:
        """Store a ciphertext and commit its hash raw; returns the hash."""
        ref = self.env.store.put(io.BytesIO(ciphertext))
        self.commit_raw(party, ref.digest)
        return ref.digest

    # ---- reading ----------------------------------------------------------------------------

    def info(self) -> SessionInfo:
        return self.env.owner.session(self.session_id)

    def status(self, party: Party) -> ContributionStatus:
        return party.client.contribution(self.session_id).status

    def record(self) -> SessionRecord:
        record = self.env.aggregator.state.get(self.session_id)
        assert record is not None, f"the aggregator never queued session {self.session_id}"
        return record

    def decisions(self) -> dict[str, dict[str, Any]]:
        return {d["contributor"]: d for d in self.record().result["decisions"]}

    def certificate_of(self, party: Party) -> dict[str, Any]:
        """The stored, signed rejection certificate of ``party`` (raw JSON form)."""
        mine = [
            c for c in self.record().result["certificates"] if c["contributor"] == party.address
        ]
        assert len(mine) == 1, f"{party.address} has {len(mine)} certificates"
        return mine[0]

    # ---- the aggregator -----------------------------------------------------------------

    def run(self) -> SessionRecord:
        """Let the aggregator take every queued session as far as it goes; this one's record."""
        self.env.aggregator.poll()
        return self.record()

    def assert_outcome(
        self,
        rejected: Mapping[str, Reason],
        downloads: Path,
        *,
        absent: Iterable[str] = (),
        unslashed: Iterable[str] = (),
    ) -> dict[str, Path]:
        """The session completed; ``rejected`` (address -> reason) rejected and slashed.

        ``unslashed`` rejected parties keep their stake (no certificate); ``absent``
        parties never got a submission in. Every other contributor was accepted and
        downloads the same adapter; returns the download directories by address.
        """
        record = self.record()
        assert record.stage is Stage.DONE, f"session {self.session_id}: {record.error}"
        info = self.info()
        assert info.state is SessionState.FINALIZED
        absent = set(absent)
        for party in self.parties:
            if party.address in absent:
                assert self.status(party) is ContributionStatus.NONE
        decisions = self.decisions()
        assert set(decisions) == {p.address for p in self.parties} - absent
        accepted = [p for p in self.parties if p.address not in {*rejected, *absent}]
        assert info.accepted_count == len(accepted)
        unslashed = set(unslashed)
        coordinator = self.env.owner.contracts.coordinator
        for address, reason in rejected.items():
            decision = decisions[address]
            assert not decision["accepted"]
            assert decision["reason_code"] == int(reason), decision
            assert decision["reason"] == reason.name.lower()
            status = coordinator.contribution(self.session_id, address).status
            if address in unslashed:
                assert status is ContributionStatus.SUBMITTED  # its stake back after the window
                assert address not in {c["contributor"] for c in record.result["certificates"]}
                continue
            assert status is ContributionStatus.SLASHED
            assert address in record.result["slashed"]
            assert coordinator.claimable(self.session_id, address) == 0
        assert sorted(record.result["slashed"]) == sorted(set(rejected) - unslashed)
        out: dict[str, Path] = {}
        for party in accepted:
            decision = decisions[party.address]
            assert decision["accepted"], decision
            assert decision["reason_code"] == int(Reason.ACCEPTED)
            assert self.status(party) is ContributionStatus.ACCEPTED
            out[party.address] = party.client.download(
                self.session_id, downloads / f"s{self.session_id}-{party.address}"
            )
        assert out, "no one was accepted"
        assert len({tree_sha256(d) for d in out.values()}) == 1, "adapters differ"
        return out


@dataclass
class Env:
    """A chain with the contracts, a store, a registered enclave and a session owner."""

    chain: Chain
    deployment: Deployment
    store: LocalStore
    aggregator: Aggregator
    enclave_id: int
    owner: Client
    eval_set: bytes
    workdir: Path

    @property
    def measurement(self) -> bytes:
        return self.aggregator.measurement

    @property
    def data_dir(self) -> Path:
        return self.aggregator.config.data_dir

    def party(self) -> Party:
        """A fresh contributor (wallet + HPKE key), funded with 10 ether."""
        identity = Identity.generate()
        self.chain.fund(identity.address, 10 * ETHER)
        return Party(identity, Client(self.chain, self.deployment, self.store, identity))

    def open_session(self, contributors: int, *, quorum: int | None = None) -> Session:
        """A session for ``contributors`` fresh allow-listed parties.

        ``max_contributors`` is ``contributors``; so is the quorum unless given.
        """
        parties = [self.party() for _ in range(contributors)]
        session_id = self.owner.open_session(
            self.eval_set,
            SessionOptions(
                enclave_id=self.enclave_id,
                quorum=contributors if quorum is None else quorum,
                max_contributors=contributors,
                min_stake=MIN_STAKE,
                reward_pool=ETHER,
                allow_list=tuple(p.address for p in parties),
                pinned_measurement=self.measurement,
                spec=CHEAP_SPEC,
            ),
        )
        return Session(self, session_id, parties)

    def store_files(self) -> int:
        """How many files the blob store holds."""
        return sum(1 for p in self.store.root.rglob("*") if p.is_file())


@pytest.fixture
def anvil_chain() -> Iterator[tuple[str, Chain]]:
    """A private anvil on a free loopback port (its URL and a connection), stopped after."""
    port = free_port()
    process = start_anvil(port)
    try:
        url = f"http://127.0.0.1:{port}"
        yield url, connect(url)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def bases() -> BaseModels:
    """Base models shared by every aggregator of the run (the tiny model loads once)."""
    return BaseModels()


@pytest.fixture(scope="session")
def data() -> DemoData:
    """The demo's synthetic datasets, small."""
    return demo_data(examples_per_contributor=EXAMPLES_PER_CONTRIBUTOR)


@pytest.fixture(scope="session")
def clean_files(data: DemoData) -> list[bytes]:
    """The clean contributors' JSONL files, one per sub-domain."""
    return [jsonl(records) for records in data.contributors.values()]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, bases: BaseModels, data: DemoData) -> Env:
    """One embedded chain, deployment, store and registered aggregator per module."""
    work = tmp_path_factory.mktemp("e2e")
    chain = connect("embedded")
    operator, authority, owner_account = chain.dev_accounts[:3]
    deployment = deploy_all(chain, operator, dev_authority=authority.address)
    store = LocalStore(work / "store")
    aggregator = Aggregator(
        chain,
        deployment,
        store,
        AggregatorConfig(work / "agg", operator_secret="x"),
        bases=bases,
    )
    enclave_id = aggregator.register(authority, operator)
    owner = Client(chain, deployment, store, Identity(owner_account, Identity.generate().hpke))
    return Env(chain, deployment, store, aggregator, enclave_id, owner, jsonl(data.eval_set), work)
