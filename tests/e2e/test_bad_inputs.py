"""Bad inputs, end to end: each ends in its documented outcome and harms no one else.

Two real sessions on the embedded chain with a registered dev enclave (bad ciphertexts
never reach the probe, so one session holds them all; refused submissions the other).
In each the clean contributors are still accepted, the session finalizes, and every
accepted contributor downloads the same adapter. A bad ciphertext (missing, bound to
another session or contributor) is rejected as ``unreadable`` and slashed, one whose bytes
changed at rest as ``unreadable`` without a slash; garbage JSONL inside a valid ciphertext
as ``invalid_lines``. A submission the SDK refuses
(off the allow-list, a second one, after the deadline) spends nothing and stores nothing.
A rejection certificate cannot be replayed. The aggregator's data directory holds no
plaintext of anyone's data nor of the adapter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cotune.aggregator.package import pack_adapter
from cotune.chain.clients.coordinator import ContributionStatus, SessionState
from cotune.chain.errors import RevertError
from cotune.chain.statements import RejectionCertificate
from cotune.sdk.client import SubmitError
from cotune.training.gate import Reason
from cotune.training.synthetic import DemoData

GARBAGE_JSONL = b"not json\n{}\n"


@dataclass
class Scenario:
    """A session run to completion, its contributors by role, and what was observed."""

    session: Any  # conftest.Session
    roles: dict[str, Any]  # role -> conftest.Party
    clean: list[Any]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


BAD_CIPHERTEXTS = {
    # role: (reason, error class the aggregator reports)
    "tampered": (Reason.UNREADABLE, "BlobIntegrityError"),
    "missing_blob": (Reason.UNREADABLE, "BlobNotFoundError"),
    "copied_commitment": (Reason.UNREADABLE, "ContextMismatchError"),
    "other_session": (Reason.UNREADABLE, "ContextMismatchError"),
    "other_contributor": (Reason.UNREADABLE, "ContextMismatchError"),
    "garbage": (Reason.INVALID_LINES, None),
}


# ---- the sessions (each run once per module) -----------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(env: Any, clean_files: list[bytes]) -> Scenario:
    """Two clean contributors and one of each bad ciphertext, in one session.

    Bad ciphertexts cost the gate nothing (they never reach the probe), so one session
    holds them all; each is judged on its own, and the clean two exactly as without them.
    """
    roles = ["clean_a", "clean_b", *BAD_CIPHERTEXTS]
    session = env.open_session(len(roles))
    party = dict(zip(roles, session.parties, strict=True))
    a, b = party["clean_a"], party["clean_b"]
    # Honest ones through the SDK, the rest straight through the contract.
    first = session.submit_clean(a, clean_files[0])
    tampered = session.submit_clean(party["tampered"], clean_files[2])
    session.submit_clean(b, clean_files[1])
    missing = os.urandom(32)
    assert not env.store.exists(missing.hex())
    session.commit_raw(party["missing_blob"], missing)
    session.commit_raw(party["copied_commitment"], first.ciphertext_hash)
    role = party["other_session"]
    session.upload_and_commit(
        role, session.encrypt(role, clean_files[2], session_id=session.session_id + 1)
    )
    role = party["other_contributor"]
    session.upload_and_commit(role, session.encrypt(role, clean_files[2], contributor=a.address))
    session.upload_and_commit(party["garbage"], session.encrypt(party["garbage"], GARBAGE_JSONL))
    assert session.info().state is SessionState.TRAINING
    # After the commit, before the enclave reads it: one byte flipped at rest.
    path = env.store.path_of(tampered.ciphertext_hash.hex())
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    session.run()
    return Scenario(session, party, [a, b])


@dataclass
class Attempt:
    """One refused submission and what it left behind."""

    sdk_error: BaseException | None
    raw_error: BaseException | None
    balance: tuple[int, int]  # before, after
    store_files: tuple[int, int]
    status: ContributionStatus


def _attempt(env: Any, session: Any, party: Any, data: bytes) -> Attempt:
    """Submit through the SDK, then raw through the contract; record what changed."""

    def caught(action: Callable[[], object]) -> BaseException | None:
        try:
            action()
        except Exception as exc:
            return exc
        return None

    balance, files = env.chain.balance(party.address), env.store_files()
    sdk = caught(lambda: session.submit_clean(party, data))
    raw = caught(lambda: session.commit_raw(party, os.urandom(32)))
    status = env.owner.contracts.coordinator.contribution(session.session_id, party.address)
    return Attempt(
        sdk,
        raw,
        (balance, env.chain.balance(party.address)),
        (files, env.store_files()),
        status.status,
    )


def _advance_to(env: Any, timestamp: int) -> None:
    """Mine until the latest block is at ``timestamp``."""
    env.chain.advance_time(timestamp - env.chain.timestamp())
    while env.chain.timestamp() < timestamp:
        env.chain.mine()
    assert env.chain.timestamp() == timestamp


@pytest.fixture(scope="module")
def refused(env: Any, clean_files: list[bytes]) -> Scenario:
    """Quorum 2 of 3: an outsider, a double submit, and a late third contributor.

    An outsider (funded, not allow-listed) tries first; the first contributor submits and
    tries again; the second submits. The late one tries when the latest block is at the
    submit deadline (every later block is past it), and again once the deadline has
    passed. Then the owner closes the session and the aggregator runs it with the two.
    """
    session = env.open_session(3, quorum=2)
    a, b, late = session.parties
    outsider = env.party()
    extra: dict[str, Any] = {"outsider": _attempt(env, session, outsider, clean_files[2])}
    session.submit_clean(a, clean_files[0])
    stake = a.client.contribution(session.session_id).stake
    extra["double"] = _attempt(env, session, a, clean_files[0])
    extra["double_stake"] = (stake, a.client.contribution(session.session_id).stake)
    extra["double_submissions"] = [
        s.contributor
        for s in env.owner.contracts.coordinator.submissions(session.session_id)
        if s.contributor == a.address
    ]
    session.submit_clean(b, clean_files[1])
    deadline = session.info().submit_deadline
    _advance_to(env, deadline)
    extra["at_deadline"] = _attempt(env, session, late, clean_files[2])
    _advance_to(env, deadline + 60)
    extra["late"] = _attempt(env, session, late, clean_files[2])
    extra["submitted"] = session.info().submitted
    env.owner.close(session.session_id)
    session.run()
    return Scenario(session, {"a": a, "b": b, "late": late}, [a, b], extra)


# ---- 1-4: bad ciphertexts and bad data are rejected and slashed, no one else is harmed ----


def _assert_rejected(scenario: Scenario, role: str, tmp_path: Path) -> None:
    expected = {scenario.roles[r].address: reason for r, (reason, _) in BAD_CIPHERTEXTS.items()}
    # Bytes changed at rest after an intact upload may not be the uploader's doing.
    scenario.session.assert_outcome(
        expected, tmp_path, unslashed=[scenario.roles["tampered"].address]
    )
    error_class = BAD_CIPHERTEXTS[role][1]
    if error_class is not None:
        decision = scenario.session.decisions()[scenario.roles[role].address]
        error = str(decision["evidence"]["error"])
        assert error.startswith(error_class + ":"), error


def test_a_blob_changed_at_rest_is_unreadable_but_not_slashed(
    bad_inputs: Scenario, tmp_path: Path
) -> None:
    _assert_rejected(bad_inputs, "tampered", tmp_path)
    decision = bad_inputs.session.decisions()[bad_inputs.roles["tampered"].address]
    assert decision["evidence"]["slashable"] is False


def test_commitment_without_its_blob_is_unreadable_and_slashed(
    bad_inputs: Scenario, tmp_path: Path
) -> None:
    _assert_rejected(bad_inputs, "missing_blob", tmp_path)


def test_copied_commitment_is_unreadable_and_slashed(bad_inputs: Scenario, tmp_path: Path) -> None:
    # The copier named another contributor's ciphertext: it opens only as theirs.
    _assert_rejected(bad_inputs, "copied_commitment", tmp_path)


def test_ciphertext_for_another_session_is_unreadable_and_slashed(
    bad_inputs: Scenario, tmp_path: Path
) -> None:
    _assert_rejected(bad_inputs, "other_session", tmp_path)


def test_ciphertext_for_another_contributor_is_unreadable_and_slashed(
    bad_inputs: Scenario, tmp_path: Path
) -> None:
    _assert_rejected(bad_inputs, "other_contributor", tmp_path)


def test_garbage_jsonl_is_rejected_as_invalid_lines_and_slashed(
    bad_inputs: Scenario, tmp_path: Path
) -> None:
    _assert_rejected(bad_inputs, "garbage", tmp_path)
    evidence = bad_inputs.session.decisions()[bad_inputs.roles["garbage"].address]["evidence"]
    assert evidence["invalid_lines"] == 2
    assert evidence["examples"] == 0
    # A salted commitment (the enclave's own salt: the upload carried none), not the hash.
    assert len(evidence["dataset_commitment"]) == 64
    assert evidence["dataset_commitment"] != hashlib.sha256(GARBAGE_JSONL).hexdigest()


# ---- 5-7: refused submissions spend and store nothing --------------------------------------


def _assert_refused(attempt: Attempt, sdk_says: str, contract_says: str) -> None:
    assert isinstance(attempt.sdk_error, SubmitError), repr(attempt.sdk_error)
    assert sdk_says in str(attempt.sdk_error)
    assert attempt.store_files[1] == attempt.store_files[0], "a blob was stored"
    # Past the SDK the contract refuses too, at gas estimation: no transaction is sent.
    assert isinstance(attempt.raw_error, RevertError), repr(attempt.raw_error)
    assert attempt.raw_error.error == contract_says
    before, after = attempt.balance
    assert after == before, f"{before - after} wei spent"


def _assert_session_unharmed(scenario: Scenario, tmp_path: Path) -> None:
    late = scenario.roles["late"]
    scenario.session.assert_outcome({}, tmp_path, absent=[late.address])


def test_submitter_off_the_allow_list_is_refused(refused: Scenario, tmp_path: Path) -> None:
    attempt = refused.extra["outsider"]
    _assert_refused(attempt, "allow-list", "NotAllowListed")
    assert attempt.status is ContributionStatus.NONE
    _assert_session_unharmed(refused, tmp_path)


def test_double_submit_is_refused(refused: Scenario, tmp_path: Path) -> None:
    attempt = refused.extra["double"]
    _assert_refused(attempt, "already submitted", "AlreadySubmitted")
    assert attempt.status is ContributionStatus.SUBMITTED  # then, before the aggregator ran
    before, after = refused.extra["double_stake"]
    assert before == after == refused.session.info().min_stake
    assert len(refused.extra["double_submissions"]) == 1
    _assert_session_unharmed(refused, tmp_path)


def test_submit_after_the_deadline_is_refused(refused: Scenario, tmp_path: Path) -> None:
    attempt = refused.extra["late"]
    _assert_refused(attempt, "deadline has passed", "SubmitDeadlinePassed")
    assert attempt.status is ContributionStatus.NONE
    assert refused.extra["submitted"] == 2
    late = refused.roles["late"]
    assert late.client.contribution(refused.session.session_id).stake == 0
    _assert_session_unharmed(refused, tmp_path)


def test_submit_when_only_later_blocks_remain_is_refused_before_upload(
    refused: Scenario,
) -> None:
    # The latest block is at the deadline; the embedded chain's next block is past it.
    _assert_refused(refused.extra["at_deadline"], "deadline has passed", "SubmitDeadlinePassed")


# ---- 8: a rejection certificate slashes once, in its own session, its own contributor -----


def test_rejection_certificate_cannot_be_replayed(
    env: Any, bad_inputs: Scenario, refused: Scenario
) -> None:
    session = bad_inputs.session
    bad = bad_inputs.roles["garbage"]
    raw = session.certificate_of(bad)
    certificate = RejectionCertificate.from_dict(raw)
    signature = bytes.fromhex(raw["signature"])
    assert session.status(bad) is ContributionStatus.SLASHED
    signer = session.info().enclave_signer
    pool = session.info().pool

    with pytest.raises(RevertError) as again:
        env.owner.slash(certificate, signature)
    assert again.value.error in ("AlreadySlashed", "NotEligible"), again.value

    # Into another finalized session of the same enclave: the signature no longer holds.
    assert refused.session.info().state is SessionState.FINALIZED
    moved = dataclasses.replace(certificate, session_id=refused.session.session_id)
    with pytest.raises(RevertError) as elsewhere:
        env.owner.slash(moved, signature)
    assert elsewhere.value.error == "InvalidSignature", elsewhere.value
    assert elsewhere.value.args_by_name["expected"] == signer

    # Against an accepted contributor of the same session: neither.
    framed = dataclasses.replace(certificate, contributor=bad_inputs.clean[0].address)
    with pytest.raises(RevertError) as frame:
        env.owner.slash(framed, signature)
    assert frame.value.error == "InvalidSignature", frame.value

    assert session.status(bad) is ContributionStatus.SLASHED
    assert all(session.status(p) is ContributionStatus.ACCEPTED for p in bad_inputs.clean)
    assert session.info().pool == pool
    assert all(refused.session.status(p) is ContributionStatus.ACCEPTED for p in refused.clean)


# ---- 9: no plaintext at rest where the aggregator keeps its state --------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _secrets(data: DemoData, clean_files: list[bytes], eval_set: bytes) -> dict[bytes, str]:
    """Byte strings that must not appear at rest, with what each is."""
    secrets: dict[bytes, str] = {}
    for index, file in enumerate([*clean_files, eval_set]):
        what = f"dataset {index}" if index < len(clean_files) else "eval set"
        for number, line in enumerate(file.decode().splitlines(), 1):
            secrets[line.encode()] = f"{what} line {number}"
            secrets[json.dumps(line)[1:-1].encode()] = f"{what} line {number} (JSON-escaped)"
    records = [r for rs in data.contributors.values() for r in rs] + data.eval_set
    for record in records:
        for text in _strings(record):
            if len(text) > 12:
                secrets[text.encode()] = f"the string {text!r}"
    return secrets


def _adapter_windows(weights: bytes, count: int = 6, size: int = 64) -> list[bytes]:
    """High-entropy windows from the tensor data of a safetensors file."""
    header = 8 + int.from_bytes(weights[:8], "little")
    span = len(weights) - header - size
    assert span > 0
    windows = []
    for i in range(count):
        start = header + span * i // (count - 1)
        window = weights[start : start + size]
        if len(set(window)) > 16:
            windows.append(window)
    assert len(windows) >= 3, "the adapter's weights look empty"
    return windows


@pytest.mark.parametrize("where", ["aggregator", "store"])
def test_no_plaintext_at_rest(
    where: str,
    env: Any,
    data: DemoData,
    clean_files: list[bytes],
    bad_inputs: Scenario,
    refused: Scenario,
    tmp_path: Path,
) -> None:
    # The adapter: what an accepted contributor decrypts, packed as the enclave packed it.
    session = bad_inputs.session
    adapter = bad_inputs.clean[0].client.download(session.session_id, tmp_path / "adapter")
    archive = pack_adapter(adapter)
    assert hashlib.sha256(archive).hexdigest() == session.record().result["adapter_sha256"]
    weights = (adapter / "adapter_model.safetensors").read_bytes()

    secrets = _secrets(data, clean_files, env.eval_set)
    secrets |= {w: f"adapter weights window {i}" for i, w in enumerate(_adapter_windows(weights))}
    root = env.data_dir if where == "aggregator" else env.store.root
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if where == "aggregator":
        names = {p.name for p in files}
        assert "state.sqlite3" in names
        assert "state.sqlite3-wal" in names
    else:
        assert len(files) > 10
    found = [
        f"{path.relative_to(root)} holds {what}"
        for path in files
        for content in [path.read_bytes()]
        for secret, what in secrets.items()
        if secret in content
    ]
    assert not found, "\n".join(found[:20])
