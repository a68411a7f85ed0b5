"""Session specs and gate rules stored by their hash."""

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from cotune.aggregator.spec import (
    MAX_DOCUMENT_BYTES,
    SessionSpec,
    SpecError,
    canonical,
    fetch_document,
    fetch_rules,
    fetch_spec,
    publish,
    publish_rules,
)
from cotune.storage.local import LocalStore
from cotune.training.config import LoraHyperparams
from cotune.training.gate import GateRules


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _put_raw(store: LocalStore, raw: bytes) -> bytes:
    return store.put(io.BytesIO(raw)).digest


CUSTOM_SPEC = SessionSpec(
    base_model="some/base-model",
    hyperparams=LoraHyperparams(rank=4, alpha=8, target_modules=("q_proj", "v_proj"), epochs=2),
    balance=False,
)
CUSTOM_RULES = GateRules(min_examples=5, score_floor=0.1, seed=7, probe_rank=4)


def test_canonical_is_sorted_and_compact() -> None:
    assert canonical({"b": 1, "a": [1, 2], "c": {"y": 1, "x": 2}}) == (
        b'{"a":[1,2],"b":1,"c":{"x":2,"y":1}}'
    )


@pytest.mark.parametrize("spec", [SessionSpec(), CUSTOM_SPEC], ids=["default", "custom"])
def test_spec_round_trip(store: LocalStore, spec: SessionSpec) -> None:
    digest = publish(store, spec.to_dict())
    assert len(digest) == 32
    assert digest == hashlib.sha256(canonical(spec.to_dict())).digest()
    assert fetch_spec(store, digest) == spec


def test_publish_is_content_addressed(store: LocalStore) -> None:
    first = publish(store, CUSTOM_SPEC.to_dict())
    assert publish(store, dict(reversed(list(CUSTOM_SPEC.to_dict().items())))) == first
    assert publish(store, SessionSpec().to_dict()) != first


def test_spec_defaults_fill_missing_fields(store: LocalStore) -> None:
    assert fetch_spec(store, publish(store, {})) == SessionSpec()
    partial = fetch_spec(store, publish(store, {"balance": False}))
    assert partial == SessionSpec(balance=False)


@pytest.mark.parametrize("rules", [GateRules(), CUSTOM_RULES], ids=["default", "custom"])
def test_rules_round_trip(store: LocalStore, rules: GateRules) -> None:
    digest = publish_rules(store, rules)
    assert digest == rules.hash()
    assert fetch_rules(store, digest) == rules


def test_publish_and_publish_rules_agree(store: LocalStore) -> None:
    document = json.loads(CUSTOM_RULES.canonical_json())
    assert publish(store, document) == publish_rules(store, CUSTOM_RULES) == CUSTOM_RULES.hash()


def test_fetch_document_returns_the_document(store: LocalStore) -> None:
    document = {"z": [1, {"b": None}], "a": "text"}
    assert fetch_document(store, publish(store, document), "thing") == document


# ---- refusals ----------------------------------------------------------------------------


def test_missing_digest_is_refused(store: LocalStore) -> None:
    missing = hashlib.sha256(b"never stored").digest()
    with pytest.raises(SpecError, match=missing.hex()):
        fetch_spec(store, missing)
    with pytest.raises(SpecError):
        fetch_rules(store, missing)
    with pytest.raises(SpecError):
        fetch_document(store, missing, "thing")


def test_a_huge_document_is_refused_unread(store: LocalStore) -> None:
    huge = store.put(io.BytesIO(b" " * (MAX_DOCUMENT_BYTES + 1)))
    with pytest.raises(SpecError, match="over the cap of 1,048,576"):
        fetch_document(store, huge.digest, "training spec")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"balance": false}',  # spaces
        b'{"balance":false}\n',  # trailing newline
        b'{"base_model":"x","balance":true}',  # unsorted keys
        b' {"balance":false}',
        b'{"a":1.0e0}',
        b"[]",  # canonical, but not an object
        b'"text"',
        b"null",
        b"not json",
        b"\xff\xfe\x00",
        b"",
    ],
)
def test_non_canonical_or_malformed_blob_is_refused(store: LocalStore, raw: bytes) -> None:
    digest = _put_raw(store, raw)
    with pytest.raises(SpecError):
        fetch_spec(store, digest)
    with pytest.raises(SpecError):
        fetch_document(store, digest, "thing")


def test_corrupted_blob_on_disk_is_refused(store: LocalStore) -> None:
    digest = publish(store, CUSTOM_SPEC.to_dict())
    path = store.path_of(digest.hex())
    path.chmod(0o644)
    path.write_bytes(canonical(SessionSpec().to_dict()))
    with pytest.raises(SpecError):
        fetch_spec(store, digest)


@pytest.mark.parametrize(
    "document",
    [
        {"base_model": "x", "extra": 1},
        {"Balance": True},
        {"hyperparams": {"rank": 8, "rnak": 4}},
        {"hyperparams": {"rank": 0}},
        {"hyperparams": {"dropout": 1.5}},
    ],
)
def test_unknown_or_invalid_spec_fields_are_refused(
    store: LocalStore, document: dict[str, Any]
) -> None:
    with pytest.raises(SpecError):
        fetch_spec(store, publish(store, document))


def test_spec_from_dict_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        SessionSpec.from_dict({"extra": 1})


@pytest.mark.parametrize(
    "document",
    [
        {"min_examples": 20, "unknown_rule": 1},
        {"seed": "zero"},
        {"seed": True},
        {"seed": 1.5},
    ],
)
def test_unknown_or_invalid_rules_are_refused(store: LocalStore, document: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        fetch_rules(store, publish(store, document))


def test_rules_that_do_not_hash_to_their_digest_are_refused(store: LocalStore) -> None:
    # a partial document parses (defaults fill it in) but is not the canonical rules
    digest = publish(store, {"min_examples": 20})
    assert GateRules.from_dict({"min_examples": 20}) == GateRules()
    with pytest.raises(SpecError, match="gateRulesHash"):
        fetch_rules(store, digest)


def test_spec_digest_cannot_be_read_as_rules(store: LocalStore) -> None:
    with pytest.raises(SpecError):
        fetch_rules(store, publish(store, CUSTOM_SPEC.to_dict()))


# ---- known problems ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        {"hyperparams": 5},
        {"hyperparams": None},
        {"hyperparams": {"rank": "8"}},
        {"hyperparams": {"target_modules": 5}},
    ],
    ids=["int", "null", "string-rank", "int-modules"],
)
def test_wrongly_typed_spec_fields_are_refused(store: LocalStore, document: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        fetch_spec(store, publish(store, document))


@pytest.mark.parametrize(
    "document",
    [{"balance": "false"}, {"base_model": 5}],
    ids=["string-balance", "int-model"],
)
def test_wrongly_typed_scalars_are_refused(store: LocalStore, document: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        fetch_spec(store, publish(store, document))
