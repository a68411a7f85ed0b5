"""The Coordinator through its typed client: every revert path and every event.

Each test runs on the embedded EVM and on anvil (the ``chain`` fixture). A revert is
checked by its custom-error name, its decoded arguments and the sentence a person
reads; an event by its decoded fields; a claim by the wei that actually moves out of
the Coordinator and into the claimant's account.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from chain_fixtures import Enclave, session_params
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_canonical_address
from eth_utils.crypto import keccak

from cotune.chain import (
    MAX_CONTRIBUTORS,
    Chain,
    Contracts,
    ContributionStatus,
    CoordinatorClient,
    Payout,
    RejectionCertificate,
    RevertError,
    SessionState,
    TxResult,
)
from cotune.chain.events import (
    Claimed,
    ContributionAccepted,
    Event,
    QuorumReached,
    SessionCancelled,
    SessionCreated,
    SessionExpired,
    SessionFinalized,
    Slashed,
    Submitted,
    decode_logs,
    event_field_names,
)
from cotune.chain.statements import coordinator_domain

STAKE = 10**15
"""The minimum stake ``session_params`` sets."""
POOL = 10**18
"""A reward pool; with STAKE it splits 1:3 without rounding dust."""
SLASH_WINDOW = 3600
"""What the ``deployment`` fixture deploys with."""
MODEL = keccak(text="model")
MANIFEST = keccak(text="manifest")
EVIDENCE = keccak(text="evidence")
ZERO_ADDRESS = "0x" + "00" * 20


# --------------------------------------------------------------------------- helpers


@contextmanager
def reverts(function: str, error: str, sentence: str, **args: Any) -> Iterator[None]:
    """Expect ``Coordinator.function`` to revert with ``error``, read as ``sentence``."""
    with pytest.raises(RevertError) as info:
        yield
    exc = info.value
    assert (exc.contract, exc.function, exc.error) == ("Coordinator", function, error)
    assert str(exc) == f"Coordinator.{function}: {sentence}"
    for name, value in args.items():
        assert exc.args_by_name[name] == value, name


def ciphertext(session_id: int, account: LocalAccount) -> bytes:
    """The ciphertext hash ``account`` commits to a session (distinct per pair)."""
    return keccak(text=f"ciphertext {session_id} {account.address}")


def hpke_key(account: LocalAccount) -> bytes:
    return b"\x00\x20" + keccak(text=f"hpke {account.address}")


def submit(
    contracts: Contracts, account: LocalAccount, session_id: int, stake: int = STAKE
) -> TxResult:
    return contracts.coordinator.as_account(account).submit(
        session_id, ciphertext(session_id, account), hpke_key(account), stake=stake
    )


def own_fields(event: Event) -> dict[str, Any]:
    """An event's own fields (without where it was emitted)."""
    return {name: getattr(event, name) for name in event_field_names(type(event))}


def emitted(result: TxResult, coordinator: CoordinatorClient) -> list[tuple[type, dict[str, Any]]]:
    """The Coordinator's events of a transaction as (type, fields), in log order."""
    out: list[tuple[type, dict[str, Any]]] = []
    for event in result.events:
        if event.CONTRACT != "Coordinator":
            continue
        assert event.address == coordinator.address
        assert (event.tx_hash, event.block_number) == (result.tx_hash, result.block_number)
        out.append((type(event), own_fields(event)))
    return out


def latest_tx(chain: Chain, sender: str) -> tuple[TxResult, int]:
    """The latest block's only transaction, sent by ``sender``, and the fee it paid."""
    block = chain.w3.eth.get_block("latest")
    assert len(block["transactions"]) == 1
    receipt = chain.w3.eth.get_transaction_receipt(block["transactions"][0])  # type: ignore[arg-type]
    assert receipt["from"] == sender
    result = TxResult(
        tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
        events=decode_logs(receipt["logs"]),
    )
    return result, int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def open_session(
    chain: Chain, contracts: Contracts, enclave: Enclave, *, pool: int = 0, **overrides: Any
) -> int:
    return contracts.coordinator.create_session(
        session_params(chain, enclave, **overrides), reward_pool=pool
    )


def training_session(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    submitters: Sequence[LocalAccount],
    *,
    pool: int = 0,
) -> int:
    """A session filled to its maximum by ``submitters``, hence Training at once."""
    n = len(submitters)
    session_id = open_session(
        chain, contracts, enclave, pool=pool, quorum=min(2, n), max_contributors=n
    )
    for account in submitters:
        submit(contracts, account, session_id)
    assert contracts.coordinator.session(session_id).state is SessionState.TRAINING
    return session_id


def move_past(chain: Chain, timestamp: int) -> None:
    """Advance chain time a few seconds beyond ``timestamp``."""
    chain.advance_time(max(timestamp - chain.timestamp(), 0) + 5)


def certificate(
    session_id: int,
    account: LocalAccount,
    *,
    committed: bytes | None = None,
    reason: int = 7,
    score: int = -1234,
) -> RejectionCertificate:
    return RejectionCertificate(
        session_id=session_id,
        contributor=account.address,
        ciphertext_hash=ciphertext(session_id, account) if committed is None else committed,
        reason_code=reason,
        score=score,
        evidence_hash=EVIDENCE,
    )


def slash(
    contracts: Contracts, enclave: Enclave, cert: RejectionCertificate, caller: LocalAccount
) -> TxResult:
    coordinator = contracts.coordinator.as_account(caller)
    return coordinator.slash_with_proof(cert, coordinator.sign_rejection(enclave.account, cert))


def finalize(
    contracts: Contracts,
    enclave: Enclave,
    session_id: int,
    accepted: Sequence[str],
    weights: Sequence[int],
    sealed_keys: Sequence[bytes] | None = None,
) -> TxResult:
    keys = [b"sealed " + a.encode() for a in accepted] if sealed_keys is None else sealed_keys
    return contracts.coordinator.as_account(enclave.account).finalize(
        session_id, MODEL, MANIFEST, accepted, weights, keys
    )


def claim(chain: Chain, contracts: Contracts, account: LocalAccount, session_id: int) -> int:
    """Claim as ``account`` and check the wei moved; a second claim finds nothing."""
    coordinator = contracts.coordinator
    due = coordinator.claimable(session_id, account.address)
    held = chain.balance(coordinator.address)
    before = chain.balance(account.address)

    amount = coordinator.as_account(account).claim(session_id)

    result, fee = latest_tx(chain, account.address)
    assert emitted(result, coordinator) == [
        (Claimed, {"session_id": session_id, "account": account.address, "amount": amount})
    ]
    assert amount == due > 0
    assert coordinator.claimable(session_id, account.address) == 0
    assert chain.balance(coordinator.address) == held - amount
    assert chain.balance(account.address) == before + amount - fee
    assert_nothing_to_claim(contracts, account, session_id)
    return amount


def settle(chain: Chain, contracts: Contracts, account: LocalAccount, session_id: int) -> int:
    """Claim as an accepted contributor of a final pool: it settles, whatever it pays."""
    coordinator = contracts.coordinator
    due = coordinator.claimable(session_id, account.address)
    held = chain.balance(coordinator.address)
    assert coordinator.contribution(session_id, account.address).payout is not Payout.SETTLED
    amount = coordinator.as_account(account).claim(session_id)
    assert amount == due
    assert coordinator.contribution(session_id, account.address).payout is Payout.SETTLED
    assert chain.balance(coordinator.address) == held - amount
    assert_nothing_to_claim(contracts, account, session_id)
    return amount


def assert_nothing_to_claim(contracts: Contracts, account: LocalAccount, session_id: int) -> None:
    assert contracts.coordinator.claimable(session_id, account.address) == 0
    with reverts(
        "claim",
        "NothingToClaim",
        f"{account.address} has nothing to claim from session {session_id}",
        sessionId=session_id,
        account=account.address,
    ):
        contracts.coordinator.as_account(account).claim(session_id)


def set_balance(chain: Chain, address: str, wei: int) -> None:
    """Give ``address`` exactly ``wei`` (dev chains: py-evm state, or anvil_setBalance)."""
    if chain.is_embedded:
        backend: Any = chain.w3.provider.ethereum_tester.backend  # type: ignore[attr-defined]
        vm = backend.chain.get_vm()
        vm.state.set_balance(to_canonical_address(address), wei)
        vm.state.persist()
        backend.chain.header = backend.chain.header.copy(state_root=vm.state.state_root)
        chain.mine(1)
    else:
        response = chain.w3.provider.make_request("anvil_setBalance", [address, hex(wei)])  # type: ignore[arg-type]
        assert "error" not in response
    assert chain.balance(address) == wei


def forwarder_initcode(target: str) -> bytes:
    """Init code of a claimant that cannot be paid.

    The contract forwards any call with data (and its value) to ``target`` and relays
    the result, but reverts on a plain ether transfer.
    """
    forward = (
        "36600060003760006000366000"  # CALLDATACOPY(0, 0, size); push retSize, retOffset, ...
        "34" + "73" + target.removeprefix("0x").lower() + "5af1"  # CALL(gas, target, value, ...)
        "3d600060003e"  # RETURNDATACOPY(0, 0, RETURNDATASIZE)
    )
    ok = 5 + len(forward) // 2 + 3 + 4  # after head, forward, PUSH1 ok JUMPI, revert tail
    runtime_hex = (
        f"361560{ok + 5:02x}57"  # no calldata: jump to reject
        + forward
        + f"60{ok:02x}57"  # call succeeded: jump to ok
        + "3d6000fd"  # REVERT(0, RETURNDATASIZE)
        + "5b3d6000f3"  # ok: RETURN(0, RETURNDATASIZE)
        + "5b60006000fd"  # reject: REVERT(0, 0)
    )
    runtime = bytes.fromhex(runtime_hex)
    size = len(runtime)
    return bytes.fromhex(f"60{size:02x}600c60003960{size:02x}6000f3") + runtime


# ---------------------------------------------------------------------- createSession


def test_create_session_records_parameters_and_emits_session_created(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
) -> None:
    coordinator = contracts.coordinator
    allowed = [contributors[0].address, contributors[1].address]
    params = session_params(
        chain,
        enclave,
        allow_list=allowed,
        min_stake=7 * STAKE,
        eval_set_commitment=keccak(text="eval set"),
        gate_rules_hash=keccak(text="gate rules"),
        model_ref=keccak(text="base model"),
    )

    session_id = coordinator.create_session(params, reward_pool=POOL)

    result, _ = latest_tx(chain, deployer.address)
    assert session_id == coordinator.session_count() == 1
    assert emitted(result, coordinator) == [
        (
            SessionCreated,
            {
                "session_id": session_id,
                "owner": deployer.address,
                "enclave_id": enclave.enclave_id,
                "measurement": enclave.measurement,
                "quorum": 2,
                "max_contributors": 3,
                "min_stake": 7 * STAKE,
                "submit_deadline": params.submit_deadline,
                "training_deadline": params.training_deadline,
                "reward_pool": POOL,
            },
        )
    ]
    info = coordinator.session(session_id)
    assert (info.owner, info.state, info.allow_listed) == (
        deployer.address,
        SessionState.OPEN,
        True,
    )
    assert (info.enclave_id, info.enclave_signer, info.measurement) == (
        enclave.enclave_id,
        enclave.account.address,
        enclave.measurement,
    )
    assert (info.quorum, info.max_contributors, info.submitted, info.min_stake) == (
        2,
        3,
        0,
        7 * STAKE,
    )
    assert (info.submit_deadline, info.training_deadline) == (
        params.submit_deadline,
        params.training_deadline,
    )
    assert (info.pool, info.pool_paid, info.total_weight, info.accepted_count) == (POOL, 0, 0, 0)
    assert (info.eval_set_commitment, info.gate_rules_hash, info.model_ref) == (
        keccak(text="eval set"),
        keccak(text="gate rules"),
        keccak(text="base model"),
    )
    assert (info.model_hash, info.manifest_hash, info.finalized_at) == (bytes(32), bytes(32), 0)
    assert [coordinator.is_allowed(session_id, a.address) for a in contributors[:3]] == [
        True,
        True,
        False,
    ]
    assert chain.balance(coordinator.address) == POOL

    most = MAX_CONTRIBUTORS
    second = open_session(chain, contracts, enclave, quorum=most, max_contributors=most)
    assert second == coordinator.session_count() == 2
    assert not coordinator.session(second).allow_listed
    assert coordinator.session(second).max_contributors == most
    assert coordinator.contribution(second, contributors[0].address).status is (
        ContributionStatus.NONE
    )
    with reverts("getSession", "UnknownSession", "session 3 does not exist", sessionId=3):
        coordinator.session(3)


def test_create_session_reverts(chain: Chain, contracts: Contracts, enclave: Enclave) -> None:
    coordinator = contracts.coordinator

    with reverts("createSession", "UnknownEnclave", "enclave 99 is not registered", enclaveId=99):
        coordinator.create_session(session_params(chain, enclave, enclave_id=99))

    other = keccak(text="another measurement")
    with reverts(
        "createSession",
        "MeasurementMismatch",
        f"pinned measurement 0x{other.hex()} differs from the enclave's "
        f"0x{enclave.measurement.hex()}",
        pinned=other,
        registered=enclave.measurement,
    ):
        coordinator.create_session(session_params(chain, enclave, measurement=other))

    over = MAX_CONTRIBUTORS + 1
    for quorum, most in ((0, 3), (4, 3), (1, over), (over, over)):
        with reverts(
            "createSession",
            "InvalidQuorum",
            f"quorum {quorum} must be between 1 and max contributors {most} "
            f"(at most {MAX_CONTRIBUTORS})",
            quorum=quorum,
            maxContributors=most,
        ):
            coordinator.create_session(
                session_params(chain, enclave, quorum=quorum, max_contributors=most)
            )

    now = chain.timestamp()
    for submit_at, train_by in ((now - 10, now + 5000), (now + 1000, now + 1000), (now + 1000, 9)):
        with reverts(
            "createSession",
            "InvalidDeadlines",
            "deadlines must be in the future and the training deadline "
            f"({train_by}) after the submit deadline ({submit_at})",
            submitDeadline=submit_at,
            trainingDeadline=train_by,
        ):
            coordinator.create_session(
                session_params(
                    chain, enclave, submit_deadline=submit_at, training_deadline=train_by
                )
            )
    assert coordinator.session_count() == 0

    contracts.registry.revoke(enclave.enclave_id)
    with reverts(
        "createSession",
        "EnclaveRevoked",
        f"enclave {enclave.enclave_id} has been revoked",
        enclaveId=enclave.enclave_id,
    ):
        coordinator.create_session(session_params(chain, enclave), reward_pool=POOL)
    assert coordinator.session_count() == 0
    assert chain.balance(coordinator.address) == 0


# ----------------------------------------------------------------------------- submit


def test_submit_emits_submitted_and_reaching_max_contributors_starts_training(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    contributors: list[LocalAccount],
) -> None:
    coordinator = contracts.coordinator
    session_id = open_session(chain, contracts, enclave, pool=POOL)
    stakes = [STAKE, 2 * STAKE, 3 * STAKE]

    results = [
        submit(contracts, a, session_id, s) for a, s in zip(contributors[:3], stakes, strict=True)
    ]

    for account, stake, result in zip(contributors[:3], stakes, results, strict=True):
        submitted = (
            Submitted,
            {
                "session_id": session_id,
                "contributor": account.address,
                "ciphertext_hash": ciphertext(session_id, account),
                "hpke_public_key": hpke_key(account),
                "stake": stake,
            },
        )
        expected: list[tuple[type, dict[str, Any]]] = [submitted]
        if account is contributors[2]:
            expected.append((QuorumReached, {"session_id": session_id, "submitted": 3}))
        assert emitted(result, coordinator) == expected
        contribution = coordinator.contribution(session_id, account.address)
        assert (contribution.stake, contribution.status, contribution.ciphertext_hash) == (
            stake,
            ContributionStatus.SUBMITTED,
            ciphertext(session_id, account),
        )
        assert (contribution.reward_paid, contribution.weight, contribution.payout) == (
            0,
            0,
            Payout.NONE,
        )
    info = coordinator.session(session_id)
    assert (info.state, info.submitted) == (SessionState.TRAINING, 3)
    assert chain.balance(coordinator.address) == POOL + 6 * STAKE

    with reverts(
        "submit",
        "WrongState",
        f"session {session_id} is not Open: it is Training",
        sessionId=session_id,
        actual=SessionState.TRAINING,
        required=SessionState.OPEN,
    ):
        submit(contracts, contributors[3], session_id)


def test_submit_reverts(
    chain: Chain, contracts: Contracts, enclave: Enclave, contributors: list[LocalAccount]
) -> None:
    first, second, outsider = contributors[:3]
    coordinator = contracts.coordinator.as_account(first)
    allow_list = [first.address, second.address]
    session_id = open_session(chain, contracts, enclave, allow_list=allow_list)
    deadline = contracts.coordinator.session(session_id).submit_deadline

    with reverts("submit", "UnknownSession", "session 2 does not exist", sessionId=2):
        submit(contracts, first, 2)
    with reverts(
        "submit",
        "NotAllowListed",
        f"{outsider.address} is not on the allow-list of session {session_id}",
        sessionId=session_id,
        contributor=outsider.address,
    ):
        submit(contracts, outsider, session_id)
    with reverts("submit", "EmptyCiphertextHash", "the ciphertext hash is zero"):
        coordinator.submit(session_id, bytes(32), hpke_key(first), stake=STAKE)
    with reverts(
        "submit",
        "InvalidHpkeKey",
        "an HPKE public key of 0 bytes with KEM id 0x0000 is not supported: expected KEM "
        "0x0020 with 34 bytes (X25519) or 0x647a with 1218 bytes (ML-KEM-768 + X25519)",
        kemId=b"\x00\x00",
        length=0,
    ):
        coordinator.submit(session_id, ciphertext(session_id, first), b"", stake=STAKE)
    for low in (0, STAKE - 1):
        with reverts(
            "submit",
            "StakeTooLow",
            f"stake {low} wei is below the session's minimum of {STAKE} wei",
            sent=low,
            required=STAKE,
        ):
            submit(contracts, first, session_id, low)

    submit(contracts, first, session_id)
    with reverts(
        "submit",
        "AlreadySubmitted",
        f"{first.address} has already submitted to session {session_id}",
        sessionId=session_id,
        contributor=first.address,
    ):
        coordinator.submit(session_id, keccak(text="second try"), hpke_key(second), stake=STAKE)

    move_past(chain, deadline)
    with reverts(
        "submit",
        "SubmitDeadlinePassed",
        f"the submit deadline of session {session_id} ({deadline}) has passed",
        sessionId=session_id,
        deadline=deadline,
    ):
        submit(contracts, second, session_id)
    info = contracts.coordinator.session(session_id)
    assert (info.state, info.submitted) == (SessionState.OPEN, 1)


def test_failed_submit_sends_nothing_and_costs_no_stake(
    chain: Chain, contracts: Contracts, enclave: Enclave, contributors: list[LocalAccount]
) -> None:
    account = contributors[0]
    session_id = open_session(chain, contracts, enclave, pool=POOL)
    nonce = chain.w3.eth.get_transaction_count(account.address)
    balance = chain.balance(account.address)
    block = chain.block_number()

    with pytest.raises(RevertError):
        submit(contracts, account, session_id, STAKE - 1)  # StakeTooLow
    with pytest.raises(RevertError):
        submit(contracts, account, session_id + 1)  # UnknownSession

    assert chain.w3.eth.get_transaction_count(account.address) == nonce
    assert chain.w3.eth.get_transaction_count(account.address, "pending") == nonce
    assert chain.block_number() == block
    assert chain.balance(account.address) == balance
    assert chain.balance(contracts.coordinator.address) == POOL
    assert contracts.coordinator.contribution(session_id, account.address).status is (
        ContributionStatus.NONE
    )

    submit(contracts, account, session_id)  # the nonce it did not burn is used now
    assert chain.w3.eth.get_transaction_count(account.address) == nonce + 1
    assert chain.balance(contracts.coordinator.address) == POOL + STAKE


def test_submit_stake_must_fit_in_96_bits(
    chain: Chain, contracts: Contracts, enclave: Enclave
) -> None:
    whale: LocalAccount = Account.create()
    set_balance(chain, whale.address, 2**97)
    session_id = open_session(chain, contracts, enclave)

    with reverts(
        "submit",
        "StakeTooHigh",
        f"stake {2**96} wei does not fit in 96 bits",
        sent=2**96,
    ):
        submit(contracts, whale, session_id, 2**96)

    submit(contracts, whale, session_id, 2**96 - 1)
    assert contracts.coordinator.contribution(session_id, whale.address).stake == 2**96 - 1


def test_reward_pool_must_fit_in_128_bits(
    chain: Chain, contracts: Contracts, enclave: Enclave
) -> None:
    whale: LocalAccount = Account.create()
    set_balance(chain, whale.address, 2**129)
    coordinator = contracts.coordinator.as_account(whale)
    with reverts(
        "createSession",
        "SafeCastOverflowedUintDowncast",
        f"value {2**128} does not fit in 128 bits",
        bits=128,
        value=2**128,
    ):
        coordinator.create_session(session_params(chain, enclave), reward_pool=2**128)
    session_id = coordinator.create_session(session_params(chain, enclave), reward_pool=2**127)
    assert coordinator.session(session_id).pool == 2**127


def test_submit_reverting_on_chain_after_estimation_keeps_its_reason(
    chain: Chain, contracts: Contracts, enclave: Enclave, contributors: list[LocalAccount]
) -> None:
    # On a live chain a submit estimated just before the deadline can be mined just
    # after it: estimation passes, the transaction reverts on chain.
    if chain.is_embedded:
        pytest.skip("eth-tester estimates in the pending block: estimation and mining agree")
    session_id = open_session(chain, contracts, enclave)
    deadline = contracts.coordinator.session(session_id).submit_deadline
    chain.advance_time(deadline - chain.timestamp())
    assert chain.timestamp() == deadline  # estimation (latest block) still may submit
    chain.w3.provider.make_request("evm_setNextBlockTimestamp", [deadline + 1])  # type: ignore[arg-type]

    with reverts(
        "submit",
        "SubmitDeadlinePassed",
        f"the submit deadline of session {session_id} ({deadline}) has passed",
    ):
        submit(contracts, contributors[0], session_id)


# ------------------------------------------------------------------------------ close


def test_close_starts_training_at_quorum_and_expires_below_it(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
) -> None:
    coordinator = contracts.coordinator.as_account(contributors[4])  # anyone may close
    enough = open_session(chain, contracts, enclave, pool=POOL)
    too_few = open_session(chain, contracts, enclave, pool=POOL)
    submit(contracts, contributors[0], enough)
    submit(contracts, contributors[1], enough)
    submit(contracts, contributors[2], too_few)
    deadlines = {s: coordinator.session(s).submit_deadline for s in (enough, too_few)}

    for session_id, deadline in deadlines.items():
        with reverts(
            "close",
            "SubmitDeadlineNotReached",
            f"session {session_id} accepts submissions until {deadline}",
            sessionId=session_id,
            deadline=deadline,
        ):
            coordinator.close(session_id)
    with reverts("close", "UnknownSession", "session 3 does not exist", sessionId=3):
        coordinator.close(3)

    move_past(chain, max(deadlines.values()))
    assert emitted(coordinator.close(enough), coordinator) == [
        (QuorumReached, {"session_id": enough, "submitted": 2})
    ]
    assert emitted(coordinator.close(too_few), coordinator) == [
        (SessionExpired, {"session_id": too_few, "previous": SessionState.OPEN})
    ]
    assert coordinator.session(enough).state is SessionState.TRAINING
    assert coordinator.session(too_few).state is SessionState.EXPIRED
    for session_id, state in ((enough, "Training"), (too_few, "Expired")):
        with reverts(
            "close",
            "WrongState",
            f"session {session_id} is not Open: it is {state}",
            sessionId=session_id,
            required=SessionState.OPEN,
        ):
            coordinator.close(session_id)

    # Expired below quorum: the stake goes back, the pool to the owner.
    assert claim(chain, contracts, contributors[2], too_few) == STAKE
    assert claim(chain, contracts, deployer, too_few) == POOL
    assert_nothing_to_claim(contracts, contributors[0], too_few)
    # Training: nobody is owed anything yet.
    for account in (deployer, contributors[0], contributors[1]):
        assert_nothing_to_claim(contracts, account, enough)
    assert chain.balance(contracts.coordinator.address) == POOL + 2 * STAKE


# ----------------------------------------------------------------------------- cancel


def test_cancel_refunds_every_stake_and_the_pool(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
) -> None:
    coordinator = contracts.coordinator
    session_id = open_session(chain, contracts, enclave, pool=POOL)
    submit(contracts, contributors[0], session_id)
    submit(contracts, deployer, session_id, 2 * STAKE)  # the owner contributes as well

    with reverts(
        "cancel",
        "NotSessionOwner",
        f"{contributors[0].address} is not the owner of session {session_id}",
        sessionId=session_id,
        caller=contributors[0].address,
    ):
        coordinator.as_account(contributors[0]).cancel(session_id)
    with reverts("cancel", "UnknownSession", "session 9 does not exist", sessionId=9):
        coordinator.cancel(9)
    with reverts("claim", "UnknownSession", "session 9 does not exist", sessionId=9):
        coordinator.as_account(contributors[0]).claim(9)

    result = coordinator.cancel(session_id)
    assert emitted(result, coordinator) == [(SessionCancelled, {"session_id": session_id})]
    assert coordinator.session(session_id).state is SessionState.CANCELLED
    with reverts(
        "cancel",
        "WrongState",
        f"session {session_id} is not Open: it is Cancelled",
        actual=SessionState.CANCELLED,
    ):
        coordinator.cancel(session_id)
    with reverts("submit", "WrongState", f"session {session_id} is not Open: it is Cancelled"):
        submit(contracts, contributors[1], session_id)

    assert claim(chain, contracts, contributors[0], session_id) == STAKE
    assert claim(chain, contracts, deployer, session_id) == POOL + 2 * STAKE
    assert_nothing_to_claim(contracts, contributors[1], session_id)
    assert coordinator.session(session_id).pool_paid == POOL
    assert coordinator.contribution(session_id, contributors[0].address).status is (
        ContributionStatus.REFUNDED
    )
    assert chain.balance(coordinator.address) == 0

    training = training_session(chain, contracts, enclave, contributors[:1])
    with reverts(
        "cancel",
        "WrongState",
        f"session {training} is not Open: it is Training",
        actual=SessionState.TRAINING,
        required=SessionState.OPEN,
    ):
        coordinator.cancel(training)


def test_cancel_cannot_front_run_close_once_quorum_is_met(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
) -> None:
    coordinator = contracts.coordinator
    met = open_session(chain, contracts, enclave, pool=POOL)  # quorum 2 of 3
    short = open_session(chain, contracts, enclave, pool=POOL)
    early = open_session(chain, contracts, enclave, pool=POOL)
    for account in contributors[:2]:
        submit(contracts, account, met)
        submit(contracts, account, early)
    submit(contracts, contributors[2], short)

    # Before the deadline the owner may cancel even with quorum met: nobody is owed
    # training yet, and every stake comes back.
    assert emitted(coordinator.cancel(early), coordinator) == [
        (SessionCancelled, {"session_id": early})
    ]
    deadline = coordinator.session(met).submit_deadline
    move_past(chain, deadline)
    with reverts(
        "cancel",
        "CancelAfterQuorum",
        f"session {met} met its quorum and its submit deadline ({deadline}) has passed: "
        "it can no longer be cancelled, only closed",
        sessionId=met,
        submitDeadline=deadline,
    ):
        coordinator.cancel(met)
    assert coordinator.session(met).state is SessionState.OPEN
    # Below quorum after the deadline the owner may still cancel (close would expire it).
    assert emitted(coordinator.cancel(short), coordinator) == [
        (SessionCancelled, {"session_id": short})
    ]
    assert emitted(coordinator.as_account(contributors[4]).close(met), coordinator) == [
        (QuorumReached, {"session_id": met, "submitted": 2})
    ]
    assert claim(chain, contracts, contributors[2], short) == STAKE
    assert claim(chain, contracts, deployer, short) == POOL
    assert claim(chain, contracts, deployer, early) == POOL
    assert chain.balance(coordinator.address) == POOL + 2 * STAKE + 2 * STAKE


# ----------------------------------------------------------------------------- expire


def test_expire_after_training_deadline_returns_stakes_and_pool_with_slashed_stakes(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
) -> None:
    coordinator = contracts.coordinator.as_account(contributors[4])  # anyone may expire
    still_open = open_session(chain, contracts, enclave)
    session_id = training_session(chain, contracts, enclave, contributors[:3], pool=POOL)
    deadline = coordinator.session(session_id).training_deadline

    with reverts(
        "expire",
        "WrongState",
        f"session {still_open} is not Training: it is Open",
        actual=SessionState.OPEN,
        required=SessionState.TRAINING,
    ):
        coordinator.expire(still_open)
    with reverts(
        "expire",
        "TrainingDeadlineNotReached",
        f"session {session_id} may still finalize until {deadline}",
        sessionId=session_id,
        deadline=deadline,
    ):
        coordinator.expire(session_id)
    with reverts("expire", "UnknownSession", "session 9 does not exist", sessionId=9):
        coordinator.expire(9)
    slash(contracts, enclave, certificate(session_id, contributors[2]), contributors[4])

    move_past(chain, deadline)
    with reverts(
        "finalize",
        "TrainingDeadlinePassed",
        f"the training deadline of session {session_id} ({deadline}) has passed",
        sessionId=session_id,
        deadline=deadline,
    ):
        finalize(contracts, enclave, session_id, [contributors[0].address], [1])
    assert emitted(coordinator.expire(session_id), coordinator) == [
        (SessionExpired, {"session_id": session_id, "previous": SessionState.TRAINING})
    ]
    assert coordinator.session(session_id).state is SessionState.EXPIRED
    with reverts("expire", "WrongState", f"session {session_id} is not Training: it is Expired"):
        coordinator.expire(session_id)

    assert claim(chain, contracts, contributors[0], session_id) == STAKE
    assert claim(chain, contracts, contributors[1], session_id) == STAKE
    assert_nothing_to_claim(contracts, contributors[2], session_id)  # slashed
    assert claim(chain, contracts, deployer, session_id) == POOL + STAKE
    assert chain.balance(coordinator.address) == 0


# --------------------------------------------------------------------------- finalize


def test_finalize_reverts(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
) -> None:
    a, b, c, never = (x.address for x in contributors[:4])
    still_open = open_session(chain, contracts, enclave)
    session_id = training_session(chain, contracts, enclave, contributors[:3], pool=POOL)
    slash(contracts, enclave, certificate(session_id, contributors[2]), deployer)

    with reverts(
        "finalize",
        "WrongState",
        f"session {still_open} is not Training: it is Open",
        actual=SessionState.OPEN,
    ):
        finalize(contracts, enclave, still_open, [a], [1])
    with reverts("finalize", "UnknownSession", "session 9 does not exist", sessionId=9):
        finalize(contracts, enclave, 9, [a], [1])
    with reverts(
        "finalize",
        "NotEnclaveSigner",
        f"{deployer.address} is not the enclave signer of session {session_id}",
        sessionId=session_id,
        caller=deployer.address,
    ):
        contracts.coordinator.finalize(session_id, MODEL, MANIFEST, [a], [1], [b"key"])
    with reverts(
        "finalize",
        "NoAcceptedContributors",
        "a session finalizes with at least one accepted contributor",
    ):
        finalize(contracts, enclave, session_id, [], [])
    for weights, keys in (([1], [b"k", b"k"]), ([1, 1], [b"k"]), ([1], [b"k"])):
        with reverts("finalize", "LengthMismatch", "the per-contributor lists differ in length"):
            finalize(contracts, enclave, session_id, [a, b], weights, keys)
    for accepted, culprit, status in (
        ([a, never], never, "None"),
        ([a, b, a], a, "Accepted"),  # the same address twice
        ([c, a], c, "Slashed"),
    ):
        with reverts(
            "finalize",
            "NotEligible",
            f"{culprit} cannot be accepted or slashed in session {session_id}: "
            f"its contribution is {status}",
            sessionId=session_id,
            contributor=culprit,
            status=ContributionStatus[status.upper()],
        ):
            finalize(contracts, enclave, session_id, accepted, [1] * len(accepted))
    with reverts("finalize", "ZeroWeight", f"accepted contributor {b} has weight 0", contributor=b):
        finalize(contracts, enclave, session_id, [a, b], [5, 0])

    contracts.registry.revoke(enclave.enclave_id)
    with reverts(
        "finalize",
        "EnclaveRevoked",
        f"enclave {enclave.enclave_id} has been revoked",
        enclaveId=enclave.enclave_id,
    ):
        finalize(contracts, enclave, session_id, [a, b], [1, 1])
    info = contracts.coordinator.session(session_id)
    assert (info.state, info.accepted_count) == (SessionState.TRAINING, 0)
    assert contracts.model_nft.balance_of(a) == 0


def test_finalize_mints_and_pays_the_pool_with_slashed_stakes_by_weight(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
) -> None:
    # a and b are accepted (weights 1 and 3); c is slashed while training, d after
    # finalize; e is neither accepted nor slashed.
    a, b, c, d, e = contributors
    coordinator = contracts.coordinator
    session_id = training_session(chain, contracts, enclave, contributors, pool=POOL)

    slashed = slash(contracts, enclave, certificate(session_id, c, reason=2, score=-5), deployer)
    assert emitted(slashed, coordinator) == [
        (
            Slashed,
            {
                "session_id": session_id,
                "contributor": c.address,
                "reason_code": 2,
                "score": -5,
                "evidence_hash": EVIDENCE,
                "amount": STAKE,
            },
        )
    ]
    assert coordinator.session(session_id).pool == POOL + STAKE

    result = finalize(contracts, enclave, session_id, [a.address, b.address], [1, 3])

    token_ids = [contracts.model_nft.token_id_for(session_id, i) for i in range(2)]
    assert token_ids == [session_id << 32, (session_id << 32) | 1]
    assert emitted(result, coordinator) == [
        (
            ContributionAccepted,
            {
                "session_id": session_id,
                "contributor": a.address,
                "weight": 1,
                "token_id": token_ids[0],
            },
        ),
        (
            ContributionAccepted,
            {
                "session_id": session_id,
                "contributor": b.address,
                "weight": 3,
                "token_id": token_ids[1],
            },
        ),
        (
            SessionFinalized,
            {
                "session_id": session_id,
                "model_hash": MODEL,
                "manifest_hash": MANIFEST,
                "accepted_count": 2,
                "total_weight": 4,
            },
        ),
    ]
    finalized_at = int(chain.w3.eth.get_block(result.block_number)["timestamp"])
    info = coordinator.session(session_id)
    assert (info.state, info.accepted_count, info.total_weight, info.finalized_at) == (
        SessionState.FINALIZED,
        2,
        4,
        finalized_at,
    )
    assert (info.model_hash, info.manifest_hash) == (MODEL, MANIFEST)
    assert [contracts.model_nft.owner_of(t) for t in token_ids] == [a.address, b.address]
    assert coordinator.contribution(session_id, b.address).status is ContributionStatus.ACCEPTED
    assert coordinator.contribution(session_id, b.address).weight == 3
    with reverts(
        "finalize", "WrongState", f"session {session_id} is not Training: it is Finalized"
    ):
        finalize(contracts, enclave, session_id, [e.address], [1])

    # The owner's pool now belongs to the accepted; e may still be slashed.
    assert_nothing_to_claim(contracts, deployer, session_id)
    assert_nothing_to_claim(contracts, e, session_id)
    assert_nothing_to_claim(contracts, c, session_id)

    assert claim(chain, contracts, a, session_id) == STAKE + (POOL + STAKE) // 4
    slash(contracts, enclave, certificate(session_id, d), e)  # in the window: joins the pool
    assert coordinator.session(session_id).pool == POOL + 2 * STAKE
    assert claim(chain, contracts, a, session_id) == STAKE // 4  # a's share of d's stake
    assert claim(chain, contracts, b, session_id) == STAKE + 3 * (POOL + 2 * STAKE) // 4
    contribution = coordinator.contribution(session_id, a.address)
    assert (contribution.payout, contribution.reward_paid) == (
        Payout.STAKE_RETURNED,
        (POOL + 2 * STAKE) // 4,
    )
    assert_nothing_to_claim(contracts, d, session_id)
    assert_nothing_to_claim(contracts, e, session_id)

    move_past(chain, finalized_at + SLASH_WINDOW)
    assert claim(chain, contracts, e, session_id) == STAKE  # unslashed: reclaimed after window
    assert coordinator.contribution(session_id, e.address).status is ContributionStatus.REFUNDED
    # The pool is final now: a and b settle (the shares divide the pool: nothing left).
    for account in (a, b):
        assert settle(chain, contracts, account, session_id) == 0
    assert coordinator.session(session_id).settled_count == 2
    for account in (deployer, a, b, c, d):
        assert_nothing_to_claim(contracts, account, session_id)
    assert chain.balance(coordinator.address) == 0


@pytest.mark.parametrize(
    ("weights", "plan"),
    [
        ((1, 1, 1), "slash_before_finalize"),
        ((2, 3, 5), "slash_between_claims"),
        ((7, 1, 13), "window_closes"),
    ],
)
def test_a_fully_claimed_session_leaves_no_dust(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
    weights: tuple[int, int, int],
    plan: str,
) -> None:
    """Weights that do not divide the pool: the last accepted claimer takes the dust."""
    pool = POOL + 2
    a, b, c, rejected = contributors[:4]
    coordinator = contracts.coordinator
    session_id = training_session(chain, contracts, enclave, contributors[:4], pool=pool)
    rejection = certificate(session_id, rejected)
    if plan == "slash_before_finalize":
        slash(contracts, enclave, rejection, deployer)
    accepted = [a, b, c]
    result = finalize(contracts, enclave, session_id, [x.address for x in accepted], weights)
    finalized_at = int(chain.w3.eth.get_block(result.block_number)["timestamp"])
    total = sum(weights)
    got = dict.fromkeys((x.address for x in accepted), 0)

    if plan == "slash_before_finalize":
        final_pool = pool + STAKE
        order = [a, b, c]
    else:
        # a claims while the rejected stake may still join the pool: its share so far
        first = claim(chain, contracts, a, session_id)
        assert first == STAKE + pool * weights[0] // total
        got[a.address] = first
        if plan == "slash_between_claims":
            slash(contracts, enclave, rejection, deployer)
            final_pool = pool + STAKE
            order = [b, c, a]
        else:
            move_past(chain, finalized_at + SLASH_WINDOW)
            assert claim(chain, contracts, rejected, session_id) == STAKE
            final_pool = pool
            order = [b, a, c]  # a's share did not grow: it settles for 0 wei
    shares = {x.address: final_pool * w // total for x, w in zip(accepted, weights, strict=True)}
    dust = final_pool - sum(shares.values())
    assert dust > 0
    for account in order:
        got[account.address] += settle(chain, contracts, account, session_id)
        assert got[account.address] == STAKE + shares[account.address] + (
            dust if account is order[-1] else 0
        )
    assert sum(got.values()) == 3 * STAKE + final_pool
    info = coordinator.session(session_id)
    assert (info.pool, info.pool_paid, info.settled_count) == (final_pool, final_pool, 3)
    for account in (*accepted, rejected, deployer):
        assert_nothing_to_claim(contracts, account, session_id)
    assert chain.balance(coordinator.address) == 0


# ---------------------------------------------------------------------- slashWithProof


def test_slash_with_proof_reverts(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    deployer: LocalAccount,
    contributors: list[LocalAccount],
) -> None:
    a, b, c, never, anyone = contributors
    coordinator = contracts.coordinator.as_account(anyone)
    assert coordinator.slash_window() == SLASH_WINDOW
    still_open = open_session(chain, contracts, enclave)
    submit(contracts, a, still_open)
    other_training = training_session(chain, contracts, enclave, [never])
    session_id = training_session(chain, contracts, enclave, [a, b, c])
    expected = enclave.account.address

    with reverts(
        "slashWithProof",
        "WrongState",
        f"session {still_open} is not Training: it is Open",
        actual=SessionState.OPEN,
        required=SessionState.TRAINING,
    ):
        slash(contracts, enclave, certificate(still_open, a), anyone)
    with reverts("slashWithProof", "UnknownSession", "session 9 does not exist", sessionId=9):
        slash(contracts, enclave, certificate(9, a), anyone)

    cert = certificate(session_id, a)
    stranger: LocalAccount = Account.create()
    elsewhere = [
        coordinator_domain(chain.chain_id + 1, coordinator.address),  # another chain
        coordinator_domain(chain.chain_id, contracts.model_nft.address),  # another contract
    ]
    forged = [
        (cert, cert.sign(stranger, coordinator.domain()), stranger.address),
        *((cert, cert.sign(enclave.account, d), None) for d in elsewhere),
        # signed, then altered: a different reason code
        (
            certificate(session_id, a, reason=1),
            coordinator.sign_rejection(enclave.account, cert),
            None,
        ),
        (cert, bytes(65), ZERO_ADDRESS),  # no signature at all
        (cert, coordinator.sign_rejection(enclave.account, cert)[:64], ZERO_ADDRESS),  # cut short
    ]
    for signed, signature, signer in forged:
        recovered = signer or signed.recover(coordinator.domain(), signature)
        assert recovered != expected
        with reverts(
            "slashWithProof",
            "InvalidSignature",
            f"signature is from {recovered}, expected the enclave signer {expected}",
            recovered=recovered,
            expected=expected,
        ):
            coordinator.slash_with_proof(signed, signature)

    wrong = keccak(text="not what a committed")
    with reverts(
        "slashWithProof",
        "CiphertextMismatch",
        f"certificate names ciphertext 0x{wrong.hex()} but "
        f"0x{ciphertext(session_id, a).hex()} was committed",
        certified=wrong,
        committed=ciphertext(session_id, a),
    ):
        slash(contracts, enclave, certificate(session_id, a, committed=wrong), anyone)
    with reverts(
        "slashWithProof",
        "NotEligible",
        f"{never.address} cannot be accepted or slashed in session {session_id}: "
        "its contribution is None",
        status=ContributionStatus.NONE,
    ):
        slash(contracts, enclave, certificate(session_id, never), anyone)

    slash(contracts, enclave, cert, anyone)
    assert coordinator.contribution(session_id, a.address).status is ContributionStatus.SLASHED
    with reverts(
        "slashWithProof",
        "AlreadySlashed",
        f"{a.address} has already been slashed in session {session_id}",
        sessionId=session_id,
        contributor=a.address,
    ):
        slash(contracts, enclave, cert, anyone)

    finalized_at = chain.w3.eth.get_block(
        finalize(contracts, enclave, session_id, [b.address], [1]).block_number
    )["timestamp"]
    with reverts(
        "slashWithProof",
        "NotEligible",
        f"{b.address} cannot be accepted or slashed in session {session_id}: "
        "its contribution is Accepted",
        status=ContributionStatus.ACCEPTED,
    ):
        slash(contracts, enclave, certificate(session_id, b), anyone)

    move_past(chain, finalized_at + SLASH_WINDOW)
    closed_at = finalized_at + SLASH_WINDOW
    with reverts(
        "slashWithProof",
        "SlashWindowClosed",
        f"the slash window of session {session_id} closed at {closed_at}",
        sessionId=session_id,
        closedAt=closed_at,
    ):
        slash(contracts, enclave, certificate(session_id, c), anyone)

    contracts.coordinator.cancel(still_open)
    with reverts(
        "slashWithProof",
        "WrongState",
        f"session {still_open} is not Training: it is Cancelled",
    ):
        slash(contracts, enclave, certificate(still_open, a), anyone)
    contracts.registry.revoke(enclave.enclave_id)
    with reverts(
        "slashWithProof",
        "EnclaveRevoked",
        f"enclave {enclave.enclave_id} has been revoked",
        enclaveId=enclave.enclave_id,
    ):
        slash(contracts, enclave, certificate(other_training, never), anyone)
    assert (
        coordinator.contribution(other_training, never.address).status
        is ContributionStatus.SUBMITTED
    )


# ----------------------------------------------------------------------------- claim


def test_claim_reverts_when_the_claimant_rejects_ether(
    chain: Chain, contracts: Contracts, enclave: Enclave, deployer: LocalAccount
) -> None:
    factory = chain.w3.eth.contract(
        abi=[], bytecode=forwarder_initcode(contracts.coordinator.address)
    )
    deployed = chain.sender(deployer).send("Forwarder", "constructor", factory.constructor())
    receipt = chain.w3.eth.get_transaction_receipt(deployed.tx_hash)  # type: ignore[arg-type]
    forwarder = str(receipt["contractAddress"])
    # The typed client, talking to the Coordinator through the forwarder: the
    # forwarder is the session's owner.
    via_forwarder = CoordinatorClient(chain, forwarder, deployer)

    session_id = via_forwarder.create_session(session_params(chain, enclave), reward_pool=POOL)
    assert contracts.coordinator.session(session_id).owner == forwarder
    assert emitted(via_forwarder.cancel(session_id), contracts.coordinator) == [
        (SessionCancelled, {"session_id": session_id})
    ]
    assert contracts.coordinator.claimable(session_id, forwarder) == POOL

    with reverts(
        "claim",
        "TransferFailed",
        f"sending {POOL} wei to {forwarder} failed",
        to=forwarder,
        amount=POOL,
    ):
        via_forwarder.claim(session_id)
    assert contracts.coordinator.claimable(session_id, forwarder) == POOL
    assert chain.balance(contracts.coordinator.address) == POOL
    assert contracts.coordinator.session(session_id).pool_paid == 0
