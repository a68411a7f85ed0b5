"""The version log: signed hash chain round trips, and each tamper case raises its own error."""

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from cotune.crypto.eip712 import sign_typed_data, typed_data_digest
from cotune.dataset.bundle import (
    ArtifactMismatchError,
    ArtifactMissingError,
    Bundle,
    init_bundle,
    load_bundle,
    update_bundle,
)
from cotune.dataset.versions import (
    DATASET_VERSION_TYPES,
    OFFLINE_DOMAIN,
    VERSION_LOG_NAME,
    ZERO_HASH,
    DatasetMismatchError,
    ForeignSignerError,
    ForkError,
    LogFormatError,
    MissingVersionError,
    SignedVersion,
    TamperedEntryError,
    UnchangedBundleError,
    VersionEntry,
    VersionLog,
    VersionLogError,
    VersionOrderError,
    dataset_domain,
    verify_artifact,
    verify_bundle,
)
from cotune.training.data import write_jsonl

PUBLISHER = Account.create()
FOREIGN = Account.create()
T0 = 1_700_000_000
MAX_VERSIONS = 8
UNUSED = Path("unused") / VERSION_LOG_NAME
FEW = settings(max_examples=max(10, settings().max_examples // 2))
"""Each example verifies up to nine signatures (about 8 ms each in pure Python)."""


def _records(version: int) -> list[dict[str, Any]]:
    return [{"text": f"example {i} of version {version}"} for i in range(version)]


def _source(directory: Path, version: int) -> Path:
    path = directory / f"v{version}.jsonl"
    write_jsonl(path, _records(version))
    return path


def _bundle(directory: Path, version: int, dataset_id: str = "support-chats") -> Bundle:
    bundle_dir = directory / "bundle"
    if version == 1:
        return init_bundle(
            bundle_dir,
            _source(directory, 1),
            dataset_id=dataset_id,
            name="Support chats",
            created_by=PUBLISHER.address,
        )
    return update_bundle(bundle_dir, _source(directory, version))


def _resign(entries: list[VersionEntry], account: LocalAccount) -> list[SignedVersion]:
    """The same content as a fresh, self-consistent chain published by ``account``."""
    chain: list[SignedVersion] = []
    previous = ZERO_HASH
    for entry in entries:
        fresh = dataclasses.replace(entry, previous=previous, publisher=account.address)
        chain.append(fresh.sign(account))
        previous = fresh.hash()
    return chain


@dataclasses.dataclass(frozen=True)
class Chains:
    """One honest 8-version chain, plus what the attacks need, all signed once."""

    honest: list[SignedVersion]
    forks: list[SignedVersion]
    """``forks[k]`` is another v(k+1), validly signed by the publisher, after honest v(k)."""
    foreign: list[SignedVersion]
    """The honest content re-published as a consistent chain by ``FOREIGN``."""


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> Chains:
    tmp = tmp_path_factory.mktemp("chain")
    log = VersionLog.create(tmp / VERSION_LOG_NAME)
    for version in range(1, MAX_VERSIONS + 1):
        log.append(_bundle(tmp, version), PUBLISHER, timestamp=T0 + 10 * version)
    honest = list(log.entries)
    forks = []
    for k, signed in enumerate(honest):
        other = dataclasses.replace(
            signed.entry,
            manifest_hash=hashlib.sha256(b"fork %d" % k).digest(),
            artifact_sha256=hashlib.sha256(b"fork artifact %d" % k).digest(),
            timestamp=signed.entry.timestamp + 1000,  # later than all: only the fork can fail
        )
        forks.append(other.sign(PUBLISHER))
    foreign = _resign([s.entry for s in honest], FOREIGN)
    return Chains(honest, forks, foreign)


def _log(versions: list[SignedVersion]) -> VersionLog:
    return VersionLog(UNUSED, OFFLINE_DOMAIN, versions)


def _raises_exactly(error: type[VersionLogError], check: Callable[[], object]) -> VersionLogError:
    """``check`` raises ``error`` itself: not a sibling, not a subclass, not nothing."""
    with pytest.raises(VersionLogError) as info:
        check()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    return info.value


# --- round trip ------------------------------------------------------------------------


def test_round_trip_five_versions(tmp_path: Path) -> None:
    path = tmp_path / VERSION_LOG_NAME
    log = VersionLog.create(path)
    artifacts: list[bytes] = []
    for version in range(1, 6):
        bundle = _bundle(tmp_path, version)
        signed = log.append(bundle, PUBLISHER, timestamp=T0 + version)
        artifacts.append(bundle.artifact_path.read_bytes())
        assert signed.entry.version == version
        assert signed.entry.manifest_hash == bundle.manifest_hash
        assert signed.entry.artifact_size == len(artifacts[-1])
        assert log.head == signed
    head = log.verify()
    assert head.entry.version == 5
    assert log.verify(PUBLISHER.address.lower()) == head

    reloaded = VersionLog.load(path)
    assert reloaded.entries == log.entries
    assert reloaded.domain == OFFLINE_DOMAIN
    assert reloaded.verify(PUBLISHER.address, known_head=log.entries[2]) == head
    assert VersionLog.open(path).entries == log.entries

    entries = reloaded.entries
    assert entries[0].entry.previous == ZERO_HASH
    for before, after in pairwise(entries):
        assert after.entry.previous == reloaded.entry_hash(before)
        assert after.entry.previous == before.entry.hash(OFFLINE_DOMAIN)
    for signed, data in zip(entries, artifacts, strict=True):
        verify_artifact(signed, data)
        assert signed.signer(OFFLINE_DOMAIN) == PUBLISHER.address
    verify_bundle(head, load_bundle(tmp_path / "bundle"))
    verify_artifact(head.entry, tmp_path / "bundle" / "data.jsonl")
    with pytest.raises(ArtifactMismatchError):
        verify_artifact(entries[0], artifacts[1])
    with pytest.raises(DatasetMismatchError):
        verify_bundle(entries[0], load_bundle(tmp_path / "bundle"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_entry_hash_is_the_eip712_digest(chains: Chains) -> None:
    entry = chains.honest[1].entry
    assert entry.hash() == typed_data_digest(
        OFFLINE_DOMAIN, DATASET_VERSION_TYPES, "DatasetVersion", entry.message()
    )
    assert entry.hash() != entry.hash(dataset_domain(1, "0x" + "c0" * 20))
    assert OFFLINE_DOMAIN.chain_id == 0
    assert OFFLINE_DOMAIN.verifying_contract == "0x" + "00" * 20
    assert OFFLINE_DOMAIN.name == "cotune Dataset" and OFFLINE_DOMAIN.version == "1"


@FEW
@given(n=st.integers(1, MAX_VERSIONS))
def test_every_honest_prefix_verifies(chains: Chains, n: int) -> None:
    log = _log(chains.honest[:n])
    assert log.verify() == chains.honest[n - 1]
    assert log.verify(PUBLISHER.address, known_head=chains.honest[n - 1]) == log.head


def test_empty_log(tmp_path: Path) -> None:
    log = VersionLog.create(tmp_path / VERSION_LOG_NAME)
    assert log.head is None and len(log) == 0
    _raises_exactly(MissingVersionError, log.verify)
    assert VersionLog.load(log.path).entries == ()


# --- tampered entries ------------------------------------------------------------------

_FIELD_CHANGES: dict[str, Callable[[Any], st.SearchStrategy[Any]]] = {
    "dataset_id": lambda old: st.sampled_from(["other", "support-chat", "support-chats2"]),
    "version": lambda old: st.integers(1, 2**64 - 1).filter(lambda v: v != old),
    "manifest_hash": lambda old: st.binary(min_size=32, max_size=32).filter(lambda v: v != old),
    "artifact_sha256": lambda old: st.binary(min_size=32, max_size=32).filter(lambda v: v != old),
    "artifact_size": lambda old: st.integers(0, 2**64 - 1).filter(lambda v: v != old),
    "previous": lambda old: st.binary(min_size=32, max_size=32).filter(lambda v: v != old),
    "timestamp": lambda old: st.integers(0, 2**64 - 1).filter(lambda v: v != old),
    "publisher": lambda old: st.sampled_from([FOREIGN.address, "0x" + "00" * 20, "0x" + "ab" * 20]),
}


@FEW
@given(
    data=st.data(), n=st.integers(2, MAX_VERSIONS), field=st.sampled_from(sorted(_FIELD_CHANGES))
)
def test_a_changed_field_is_a_tampered_entry(
    chains: Chains, data: st.DataObject, n: int, field: str
) -> None:
    versions = chains.honest[:n]
    position = data.draw(st.integers(0, n - 1), label="position")
    target = versions[position]
    value = data.draw(_FIELD_CHANGES[field](getattr(target.entry, field)), label="value")
    tampered = SignedVersion(dataclasses.replace(target.entry, **{field: value}), target.signature)
    versions = [*versions[:position], tampered, *versions[position + 1 :]]
    error = _raises_exactly(TamperedEntryError, _log(versions).verify)
    assert f"entry {position + 1} " in str(error)
    _raises_exactly(TamperedEntryError, lambda: _log(versions).verify(PUBLISHER.address))


@FEW
@given(
    n=st.integers(1, MAX_VERSIONS),
    position=st.integers(0, MAX_VERSIONS - 1),
    signature=st.one_of(
        st.tuples(st.integers(0, 64), st.integers(0, 7)),
        st.binary(min_size=0, max_size=80),
    ),
)
def test_a_damaged_signature_is_a_tampered_entry(
    chains: Chains, n: int, position: int, signature: tuple[int, int] | bytes
) -> None:
    versions = chains.honest[:n]
    position %= n
    target = versions[position]
    if isinstance(signature, tuple):
        damaged = bytearray(target.signature)
        damaged[signature[0]] ^= 1 << signature[1]
        new_signature = bytes(damaged)
    else:
        new_signature = signature
    if new_signature == target.signature:
        return
    versions = [*versions[:position], SignedVersion(target.entry, new_signature)]
    _raises_exactly(TamperedEntryError, _log(versions).verify)


def test_tampering_in_the_file_is_detected(tmp_path: Path, chains: Chains) -> None:
    path = tmp_path / VERSION_LOG_NAME
    VersionLog(path, OFFLINE_DOMAIN, chains.honest[:4]).save()
    document = json.loads(path.read_text())
    document["versions"][2]["artifact_size"] += 1
    path.write_text(json.dumps(document))
    _raises_exactly(TamperedEntryError, VersionLog.load(path).verify)


# --- reordering ------------------------------------------------------------------------


@FEW
@given(data=st.data(), n=st.integers(2, MAX_VERSIONS))
def test_swapped_entries_are_out_of_order(chains: Chains, data: st.DataObject, n: int) -> None:
    i = data.draw(st.integers(0, n - 2), label="i")
    j = data.draw(st.integers(i + 1, n - 1), label="j")
    versions = list(chains.honest[:n])
    versions[i], versions[j] = versions[j], versions[i]
    error = _raises_exactly(VersionOrderError, _log(versions).verify)
    assert "reordered" in str(error)


@FEW
@given(data=st.data(), n=st.integers(2, MAX_VERSIONS))
def test_any_permutation_is_out_of_order(chains: Chains, data: st.DataObject, n: int) -> None:
    order = data.draw(st.permutations(range(n)).filter(lambda p: list(p) != sorted(p)))
    _raises_exactly(VersionOrderError, _log([chains.honest[i] for i in order]).verify)


@FEW
@given(data=st.data(), n=st.integers(1, MAX_VERSIONS))
def test_a_duplicated_entry_is_out_of_order(chains: Chains, data: st.DataObject, n: int) -> None:
    versions = list(chains.honest[:n])
    which = data.draw(st.integers(0, n - 1), label="which")
    where = data.draw(st.integers(0, n), label="where")
    versions.insert(where, versions[which])
    _raises_exactly(VersionOrderError, _log(versions).verify)


def test_time_going_backwards_is_out_of_order(chains: Chains) -> None:
    entries = [s.entry for s in chains.honest[:3]]
    entries[2] = dataclasses.replace(entries[2], timestamp=entries[1].timestamp - 1)
    _raises_exactly(VersionOrderError, _log(_resign(entries, PUBLISHER)).verify)


# --- removed entries -------------------------------------------------------------------


@FEW
@given(data=st.data(), n=st.integers(2, MAX_VERSIONS))
def test_a_removed_entry_is_missing(chains: Chains, data: st.DataObject, n: int) -> None:
    removed = data.draw(st.integers(0, n - 2), label="removed")  # any but the head
    versions = [v for i, v in enumerate(chains.honest[:n]) if i != removed]
    error = _raises_exactly(MissingVersionError, _log(versions).verify)
    assert f"v{removed + 1} " in str(error)


@FEW
@given(data=st.data(), n=st.integers(3, MAX_VERSIONS))
def test_a_removed_run_of_middle_entries_is_missing(
    chains: Chains, data: st.DataObject, n: int
) -> None:
    start = data.draw(st.integers(1, n - 2), label="start")
    stop = data.draw(st.integers(start + 1, n - 1), label="stop")
    _raises_exactly(MissingVersionError, _log(chains.honest[:start] + chains.honest[stop:n]).verify)


@FEW
@given(data=st.data(), n=st.integers(1, MAX_VERSIONS - 1))
def test_a_truncated_log_is_missing_against_a_known_head(
    chains: Chains, data: st.DataObject, n: int
) -> None:
    seen = data.draw(st.integers(n + 1, MAX_VERSIONS), label="seen")
    log = _log(chains.honest[:n])
    log.verify()  # a prefix is a valid chain on its own
    _raises_exactly(MissingVersionError, lambda: log.verify(known_head=chains.honest[seen - 1]))


# --- forks -----------------------------------------------------------------------------


@FEW
@given(data=st.data(), n=st.integers(1, MAX_VERSIONS))
def test_both_branches_in_one_log_is_a_fork(chains: Chains, data: st.DataObject, n: int) -> None:
    k = data.draw(st.integers(0, n - 1), label="fork at")
    where = data.draw(st.integers(0, n), label="inserted at")
    versions = list(chains.honest[:n])
    versions.insert(where, chains.forks[k])
    error = _raises_exactly(ForkError, _log(versions).verify)
    assert f"v{k + 1}" in str(error)


@FEW
@given(data=st.data(), n=st.integers(2, MAX_VERSIONS))
def test_a_branch_spliced_into_the_chain_is_a_fork(
    chains: Chains, data: st.DataObject, n: int
) -> None:
    k = data.draw(st.integers(0, n - 2), label="replaced")  # the head is checked below
    versions = list(chains.honest[:n])
    versions[k] = chains.forks[k]
    error = _raises_exactly(ForkError, _log(versions).verify)
    assert "does not extend" in str(error)


@FEW
@given(data=st.data(), n=st.integers(1, MAX_VERSIONS))
def test_another_branch_is_a_fork_against_a_known_head(
    chains: Chains, data: st.DataObject, n: int
) -> None:
    seen = data.draw(st.integers(1, n), label="seen")
    versions = [*chains.honest[: n - 1], chains.forks[n - 1]]  # a self-consistent other head
    log = _log(versions)
    assert log.verify() == versions[-1]
    if seen < n:
        assert log.verify(known_head=chains.honest[seen - 1]) == versions[-1]
    else:
        _raises_exactly(ForkError, lambda: log.verify(known_head=chains.honest[seen - 1]))


def test_two_entries_after_one_predecessor_is_a_fork(chains: Chains) -> None:
    # v4 and a "v9" both follow v3: no version number repeats, the predecessor does.
    stray = dataclasses.replace(
        chains.forks[3].entry, version=MAX_VERSIONS + 1, timestamp=T0 + 10_000
    ).sign(PUBLISHER)
    error = _raises_exactly(ForkError, _log([*chains.honest, stray]).verify)
    assert "both follow" in str(error)


# --- foreign signers -------------------------------------------------------------------


@FEW
@given(data=st.data(), n=st.integers(2, MAX_VERSIONS))
def test_an_entry_signed_by_another_key_is_foreign(
    chains: Chains, data: st.DataObject, n: int
) -> None:
    k = data.draw(st.integers(0, n - 1), label="replaced")
    versions = list(chains.honest[:n])
    versions[k] = dataclasses.replace(versions[k].entry, publisher=FOREIGN.address).sign(FOREIGN)
    _raises_exactly(ForeignSignerError, _log(versions).verify)
    _raises_exactly(ForeignSignerError, lambda: _log(versions).verify(PUBLISHER.address))


@FEW
@given(n=st.integers(1, MAX_VERSIONS))
def test_an_entry_appended_by_another_key_is_foreign(chains: Chains, n: int) -> None:
    head = chains.honest[n - 1].entry
    extra = dataclasses.replace(
        head,
        version=n + 1,
        previous=head.hash(),
        timestamp=head.timestamp + 1,
        manifest_hash=bytes(31) + b"\x01",
        publisher=FOREIGN.address,
    ).sign(FOREIGN)
    _raises_exactly(ForeignSignerError, _log([*chains.honest[:n], extra]).verify)


@FEW
@given(n=st.integers(1, MAX_VERSIONS))
def test_a_log_replaced_by_another_publisher_is_foreign_to_the_expected_one(
    chains: Chains, n: int
) -> None:
    log = _log(chains.foreign[:n])
    assert log.verify() == chains.foreign[n - 1]  # self-consistent: trust on first use
    _raises_exactly(ForeignSignerError, lambda: log.verify(PUBLISHER.address))
    _raises_exactly(ForeignSignerError, lambda: _log(chains.honest[:n]).verify(FOREIGN.address))


def test_another_key_signing_in_the_publishers_name_is_tampering(chains: Chains) -> None:
    versions = list(chains.honest[:3])
    versions[1] = SignedVersion(versions[1].entry, _sign_as(FOREIGN, versions[1].entry))
    _raises_exactly(TamperedEntryError, _log(versions).verify)


def _sign_as(account: LocalAccount, entry: VersionEntry) -> bytes:
    """Sign ``entry`` with ``account`` although it names someone else as publisher."""
    return sign_typed_data(
        account, OFFLINE_DOMAIN, DATASET_VERSION_TYPES, "DatasetVersion", entry.message()
    )


def test_an_entry_of_another_dataset_is_refused(chains: Chains) -> None:
    entries = [s.entry for s in chains.honest[:3]]
    entries[2] = dataclasses.replace(entries[2], dataset_id="another-dataset")
    _raises_exactly(DatasetMismatchError, _log(_resign(entries, PUBLISHER)).verify)


def test_signatures_are_bound_to_the_domain(tmp_path: Path, chains: Chains) -> None:
    domain = dataset_domain(31337, "0x" + "c0" * 20)
    moved = VersionLog(UNUSED, domain, chains.honest[:3])
    _raises_exactly(TamperedEntryError, moved.verify)
    path = tmp_path / VERSION_LOG_NAME
    VersionLog(path, OFFLINE_DOMAIN, chains.honest[:3]).save()
    document = json.loads(path.read_text())
    document["domain"]["chainId"] = 1
    path.write_text(json.dumps(document))
    _raises_exactly(TamperedEntryError, VersionLog.load(path).verify)


# --- appending -------------------------------------------------------------------------


def test_append_under_a_chain_domain(tmp_path: Path) -> None:
    domain = dataset_domain(31337, "0x" + "c0" * 20)
    log = VersionLog.open(tmp_path / VERSION_LOG_NAME, domain)
    log.append(_bundle(tmp_path, 1), PUBLISHER)
    log.append(_bundle(tmp_path, 2), PUBLISHER)
    reloaded = VersionLog.load(log.path)
    assert reloaded.domain == domain
    assert reloaded.verify(PUBLISHER.address).entry.version == 2
    assert reloaded.entries[1].entry.previous == reloaded.entries[0].entry.hash(domain)
    with pytest.raises(LogFormatError, match="another domain"):
        VersionLog.open(log.path, OFFLINE_DOMAIN)
    assert VersionLog.open(log.path, domain).entries == reloaded.entries


def test_append_refusals(tmp_path: Path) -> None:
    path = tmp_path / VERSION_LOG_NAME
    log = VersionLog.create(path)
    first = _bundle(tmp_path, 1)
    log.append(first, PUBLISHER, timestamp=T0)
    before = path.read_bytes()

    _raises_exactly(ForeignSignerError, lambda: log.append(_bundle(tmp_path, 2), FOREIGN))
    _raises_exactly(UnchangedBundleError, lambda: log.append(first, PUBLISHER))
    _raises_exactly(
        VersionOrderError, lambda: log.append(load_bundle(first.directory), PUBLISHER, T0 - 1)
    )
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = _bundle(other_dir, 1, dataset_id="another-dataset")
    _raises_exactly(DatasetMismatchError, lambda: log.append(other, PUBLISHER))
    assert path.read_bytes() == before and len(log) == 1

    second = log.append(load_bundle(first.directory), PUBLISHER)  # clock ahead of T0: now
    assert second.entry.version == 2 and second.entry.timestamp >= T0
    assert VersionLog.load(path).verify() == second


def test_append_never_extends_a_broken_chain(tmp_path: Path, chains: Chains) -> None:
    path = tmp_path / VERSION_LOG_NAME
    versions = list(chains.honest[:3])
    versions[1] = SignedVersion(
        dataclasses.replace(versions[1].entry, timestamp=1), versions[1].signature
    )
    log = VersionLog(path, OFFLINE_DOMAIN, versions)
    _raises_exactly(TamperedEntryError, lambda: log.append(_bundle(tmp_path, 1), PUBLISHER))
    assert not path.exists() and len(log) == 3


def test_the_clock_never_runs_backwards_on_append(tmp_path: Path) -> None:
    log = VersionLog.create(tmp_path / VERSION_LOG_NAME)
    future = 2**40
    log.append(_bundle(tmp_path, 1), PUBLISHER, timestamp=future)
    assert log.append(_bundle(tmp_path, 2), PUBLISHER).entry.timestamp == future
    log.verify()


def test_failed_save_leaves_log_and_file_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / VERSION_LOG_NAME
    log = VersionLog.create(path)
    log.append(_bundle(tmp_path, 1), PUBLISHER)
    before = path.read_bytes()

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    bundle = _bundle(tmp_path, 2)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        log.append(bundle, PUBLISHER)
    monkeypatch.undo()
    assert len(log) == 1 and path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --- the file --------------------------------------------------------------------------


def test_create_refuses_an_existing_log(tmp_path: Path) -> None:
    path = tmp_path / VERSION_LOG_NAME
    VersionLog.create(path)
    with pytest.raises(FileExistsError):
        VersionLog.create(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "exactly the members"),
        (b'{"format": "x", "domain": {}, "versions": []}', "format"),
        (
            b'{"format": "cotune-dataset-versions/1", "domain": {"name": "cotune Coordinator", '
            b'"version": "1", "chainId": 1, "verifyingContract": "0x'
            + b"00" * 20
            + b'"}, "versions": []}',
            "domain must be",
        ),
    ],
)
def test_malformed_log_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / VERSION_LOG_NAME
    path.write_bytes(content)
    with pytest.raises(LogFormatError, match=message):
        VersionLog.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("signature"), "no signature"),
        (lambda e: e.update(extra=1), "unknown"),
        (lambda e: e.update(previous="00" * 32), "0x-prefixed"),
        (lambda e: e.update(manifest_hash="0x1234"), "32 bytes"),
        (lambda e: e.update(version=0), "version"),
        (lambda e: e.update(version=True), "version"),
        (lambda e: e.update(publisher="nobody"), "address"),
        (lambda e: e.update(signature="0xzz"), "hex"),
    ],
)
def test_malformed_entries(tmp_path: Path, chains: Chains, change: Any, message: str) -> None:
    path = tmp_path / VERSION_LOG_NAME
    VersionLog(path, OFFLINE_DOMAIN, chains.honest[:2]).save()
    document = json.loads(path.read_text())
    change(document["versions"][1])
    path.write_text(json.dumps(document))
    with pytest.raises(LogFormatError, match=message):
        VersionLog.load(path)


def test_missing_log_file(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="cannot read"):
        VersionLog.load(tmp_path / VERSION_LOG_NAME)


# --- artifacts -------------------------------------------------------------------------


@given(data=st.binary(min_size=1, max_size=64), change=st.binary(min_size=1, max_size=4))
def test_verify_artifact_fails_closed(data: bytes, change: bytes) -> None:
    entry = VersionEntry(
        dataset_id="d",
        version=1,
        manifest_hash=bytes(32),
        artifact_sha256=hashlib.sha256(data).digest(),
        artifact_size=len(data),
        previous=ZERO_HASH,
        timestamp=0,
        publisher=PUBLISHER.address,
    )
    verify_artifact(entry, data)
    with pytest.raises(ArtifactMismatchError):
        verify_artifact(entry, data + change)
    with pytest.raises(ArtifactMismatchError):
        verify_artifact(entry, bytes([data[0] ^ (change[0] or 1)]) + data[1:])
    with pytest.raises(ArtifactMissingError):
        verify_artifact(entry, Path("/nonexistent/artifact.jsonl"))


def test_entry_validation() -> None:
    good: dict[str, Any] = {
        "dataset_id": "d",
        "version": 1,
        "manifest_hash": bytes(32),
        "artifact_sha256": bytes(32),
        "artifact_size": 1,
        "previous": ZERO_HASH,
        "timestamp": 0,
        "publisher": PUBLISHER.address.lower(),
    }
    assert VersionEntry(**good).publisher == PUBLISHER.address
    for bad in (
        {"version": 0},
        {"version": 2**64},
        {"manifest_hash": bytes(31)},
        {"artifact_size": -1},
        {"timestamp": 1.5},
        {"dataset_id": "Bad Id"},
        {"publisher": "0x12"},
    ):
        with pytest.raises(ValueError):
            VersionEntry(**{**good, **bad})
    with pytest.raises(ValueError, match="names publisher"):
        VersionEntry(**good).sign(FOREIGN)
