"""Dataset bundles: canonical manifests, validated artifacts, mismatch detection, atomic writes."""

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from cotune.dataset.bundle import (
    MANIFEST_NAME,
    ArtifactMismatchError,
    ArtifactMissingError,
    BundleError,
    BundleExistsError,
    DatasetManifest,
    DatasetValidationError,
    InvalidArtifactError,
    ManifestError,
    NonCanonicalManifestError,
    canonical_json,
    check_artifact,
    init_bundle,
    load_bundle,
    read_manifest,
    update_bundle,
    validate_artifact_name,
    validate_dataset_id,
)
from cotune.training.data import write_jsonl

CREATOR = Account.create()
RECORDS: list[dict[str, Any]] = [
    {"text": "Grüße aus Köln"},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
]


def _jsonl(
    directory: Path, records: list[dict[str, Any]] = RECORDS, name: str = "src.jsonl"
) -> Path:
    path = directory / name
    write_jsonl(path, records)
    return path


def _init(tmp: Path, **overrides: Any) -> Path:
    bundle_dir = tmp / "bundle"
    kwargs: dict[str, Any] = {
        "dataset_id": "support-chats",
        "name": "Support chats — Données",
        "created_by": CREATOR.address,
        "description": "anonymised support conversations",
        "license": "CC-BY-4.0",
        "metadata": {"language": ["de", "fr"], "source": {"kind": "crm", "rows": 3}},
    }
    kwargs.update(overrides)
    init_bundle(bundle_dir, _jsonl(tmp), **kwargs)
    return bundle_dir


def _leftover_temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def test_init_and_load_round_trip(tmp_path: Path) -> None:
    source = _jsonl(tmp_path)
    bundle = init_bundle(
        tmp_path / "b",
        source,
        dataset_id="support-chats",
        name="Support chats",
        created_by=CREATOR.address.lower(),
    )
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["data.jsonl", MANIFEST_NAME]
    assert bundle.artifact_path.read_bytes() == source.read_bytes()
    manifest = bundle.manifest
    assert manifest.created_by == CREATOR.address  # checksummed
    assert manifest.example_count == len(RECORDS)
    assert manifest.artifact_size == source.stat().st_size
    assert manifest.artifact_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    raw = bundle.manifest_path.read_bytes()
    assert raw == manifest.canonical()
    assert bundle.manifest_hash == hashlib.sha256(raw).digest() == manifest.hash()
    loaded = load_bundle(tmp_path / "b")
    assert loaded == bundle
    assert loaded.manifest_hash == bundle.manifest_hash
    assert load_bundle(tmp_path / "b", validate=False) == bundle


def test_manifest_is_canonical_utf8_json(tmp_path: Path) -> None:
    bundle = load_bundle(_init(tmp_path))
    raw = bundle.manifest_path.read_bytes()
    assert b"\n" not in raw and b": " not in raw and b", " not in raw
    assert "Données".encode() in raw  # UTF-8, not \u escapes
    document = json.loads(raw)
    assert list(document) == sorted(document)
    assert document["format"] == "cotune-dataset-manifest/1"
    assert document["metadata"] == {"language": ["de", "fr"], "source": {"kind": "crm", "rows": 3}}


def test_invalid_jsonl_is_refused_listing_every_bad_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "ok"}\n{"text": ""}\n{"text": "fine"}\nnot json\n')
    with pytest.raises(DatasetValidationError) as info:
        init_bundle(tmp_path / "b", source, dataset_id="d", name="n", created_by=CREATOR.address)
    assert sorted({e.line for e in info.value.report.errors}) == [2, 4]
    assert "line 2" in str(info.value) and "line 4" in str(info.value)
    assert not (tmp_path / "b").exists()  # nothing written


def test_empty_jsonl_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_bytes(b"\n")
    with pytest.raises(DatasetValidationError):
        init_bundle(tmp_path / "b", source, dataset_id="d", name="n", created_by=CREATOR.address)


def test_missing_source_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissingError):
        init_bundle(
            tmp_path / "b",
            tmp_path / "nope.jsonl",
            dataset_id="d",
            name="n",
            created_by="0x" + "11" * 20,
        )


def test_init_refuses_an_existing_bundle(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path)
    before = (bundle_dir / MANIFEST_NAME).read_bytes()
    with pytest.raises(BundleExistsError):
        init_bundle(
            bundle_dir, _jsonl(tmp_path), dataset_id="other", name="n", created_by=CREATOR.address
        )
    assert (bundle_dir / MANIFEST_NAME).read_bytes() == before


@pytest.mark.parametrize(
    "dataset_id",
    ["a", "support-chats", "team_a.v2", str(uuid.uuid4()), "0" * 64],
)
def test_valid_dataset_ids(dataset_id: str) -> None:
    assert validate_dataset_id(dataset_id) == dataset_id


@pytest.mark.parametrize(
    "dataset_id",
    ["", "Upper", "-lead", "trail-", "a/b", "a b", "x" * 65, "é", "..", 7, None],
)
def test_invalid_dataset_ids(dataset_id: object) -> None:
    with pytest.raises(ValueError, match="dataset id"):
        validate_dataset_id(dataset_id)


@pytest.mark.parametrize(
    "name", ["../data.jsonl", "a/b.jsonl", ".hidden", "manifest.json", "versions.json", ""]
)
def test_invalid_artifact_names(name: str) -> None:
    with pytest.raises(ValueError, match="artifact name"):
        validate_artifact_name(name)


def test_custom_artifact_name(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path, artifact_name="train-2024.jsonl")
    bundle = load_bundle(bundle_dir)
    assert bundle.artifact_path == bundle_dir / "train-2024.jsonl"
    assert bundle.artifact_path.exists() and not (bundle_dir / "data.jsonl").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": " "},
        {"created_by": "0x1234"},
        {"artifact_sha256": "AB" * 32},
        {"artifact_sha256": "ab" * 31},
        {"example_count": 0},
        {"example_count": True},
        {"artifact_size": -1},
        {"metadata": {"x": float("nan")}},
        {"metadata": {"x": object()}},
        {"metadata": {"x": "\ud800"}},
    ],
)
def test_manifest_fields_are_validated(overrides: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "dataset_id": "d",
        "name": "n",
        "example_count": 1,
        "artifact_sha256": "ab" * 32,
        "artifact_size": 10,
        "created_by": CREATOR.address,
    }
    fields.update(overrides)
    with pytest.raises(ValueError):
        DatasetManifest(**fields)


def test_manifest_metadata_is_copied() -> None:
    metadata: dict[str, Any] = {"tags": ["a"]}
    manifest = DatasetManifest("d", "n", 1, "ab" * 32, 10, CREATOR.address, metadata=metadata)
    metadata["tags"].append("b")
    assert manifest.metadata == {"tags": ["a"]}


_LAYOUTS = st.fixed_dictionaries(
    {
        "indent": st.sampled_from([None, 0, 1, 2, 4, "\t"]),
        "separators": st.sampled_from([(",", ":"), (", ", ": "), (",", ": "), (" ,", " : ")]),
        "ensure_ascii": st.booleans(),
        "newline": st.sampled_from(["", "\n", "\r\n", "  "]),
        "leading": st.sampled_from(["", " ", "\n"]),
    }
)


@given(order_seed=st.randoms(use_true_random=False), layout=_LAYOUTS)
def test_manifest_hash_is_stable_across_key_order_and_whitespace(
    tmp_path_factory: pytest.TempPathFactory, order_seed: Any, layout: dict[str, Any]
) -> None:
    tmp = tmp_path_factory.mktemp("layout")
    bundle_dir = _init(tmp)
    canonical = (bundle_dir / MANIFEST_NAME).read_bytes()
    original = DatasetManifest.from_json(canonical, canonical_only=True)
    document = json.loads(canonical)
    keys = list(document)
    order_seed.shuffle(keys)
    shuffled = {k: document[k] for k in keys}
    text = json.dumps(
        shuffled,
        indent=layout["indent"],
        separators=layout["separators"],
        ensure_ascii=layout["ensure_ascii"],
    )
    rewritten = (layout["leading"] + text + layout["newline"]).encode()

    # Equal content, any layout: the same manifest and the same hash.
    reparsed = DatasetManifest.from_json(rewritten)
    assert reparsed == original
    assert reparsed.hash() == original.hash()
    assert reparsed.canonical() == canonical

    # But a bundle whose manifest file is not byte-for-byte canonical is refused.
    (bundle_dir / MANIFEST_NAME).write_bytes(rewritten)
    if rewritten == canonical:
        assert load_bundle(bundle_dir).manifest == original
    else:
        with pytest.raises(NonCanonicalManifestError):
            load_bundle(bundle_dir)


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda raw: raw + b"\n",
        lambda raw: json.dumps(json.loads(raw), sort_keys=True, indent=2).encode(),
        lambda raw: raw.replace(CREATOR.address.encode(), CREATOR.address.lower().encode()),
        lambda raw: raw.replace(b'{"artifact"', b'{"artifact":"x.jsonl","artifact"', 1),
        lambda raw: json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode(),
    ],
    ids=["trailing-newline", "indented", "lowercase-address", "duplicate-key", "ascii-escaped"],
)
def test_non_canonical_manifest_is_refused(tmp_path: Path, rewrite: Any) -> None:
    bundle_dir = _init(tmp_path)
    path = bundle_dir / MANIFEST_NAME
    path.write_bytes(rewrite(path.read_bytes()))
    with pytest.raises(NonCanonicalManifestError) as info:
        load_bundle(bundle_dir)
    assert isinstance(info.value, ManifestError) and isinstance(info.value, BundleError)


@pytest.mark.parametrize(
    ("rewrite", "message"),
    [
        (lambda doc: {**doc, "extra": 1}, "unknown manifest fields: extra"),
        (lambda doc: {k: v for k, v in doc.items() if k != "license"}, "missing"),
        (lambda doc: {**doc, "format": "cotune-dataset-manifest/2"}, "format"),
        (lambda doc: {**doc, "example_count": "3"}, "example_count"),
        (lambda doc: {**doc, "dataset_id": "Not A Slug"}, "dataset id"),
        (lambda doc: [doc], "JSON object"),
    ],
)
def test_invalid_manifest_is_refused(tmp_path: Path, rewrite: Any, message: str) -> None:
    bundle_dir = _init(tmp_path)
    path = bundle_dir / MANIFEST_NAME
    document = rewrite(json.loads(path.read_bytes()))
    path.write_bytes(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(ManifestError, match=message) as info:
        load_bundle(bundle_dir)
    assert not isinstance(info.value, NonCanonicalManifestError)


def test_not_json_or_missing_manifest(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path)
    (bundle_dir / MANIFEST_NAME).write_bytes(b"\xff{")
    with pytest.raises(ManifestError, match="UTF-8 JSON"):
        load_bundle(bundle_dir)
    (bundle_dir / MANIFEST_NAME).write_bytes(b'{"a": NaN}')
    with pytest.raises(ManifestError):
        load_bundle(bundle_dir)
    (bundle_dir / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError, match="not a bundle"):
        load_bundle(bundle_dir)


@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_artifact_bit_is_detected(
    tmp_path_factory: pytest.TempPathFactory, position: int, bit: int
) -> None:
    bundle_dir = _init(tmp_path_factory.mktemp("flip"))
    artifact = bundle_dir / "data.jsonl"
    data = bytearray(artifact.read_bytes())
    data[position % len(data)] ^= 1 << bit
    artifact.write_bytes(bytes(data))
    for validate in (True, False):
        with pytest.raises(ArtifactMismatchError, match="SHA-256"):
            load_bundle(bundle_dir, validate=validate)


def test_artifact_size_change_and_removal_are_detected(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path)
    artifact = bundle_dir / "data.jsonl"
    original = artifact.read_bytes()
    artifact.write_bytes(original + b'{"text": "one more"}\n')
    with pytest.raises(ArtifactMismatchError, match="bytes, expected"):
        load_bundle(bundle_dir)
    artifact.write_bytes(original[:-1])
    with pytest.raises(ArtifactMismatchError, match="bytes, expected"):
        load_bundle(bundle_dir, validate=False)
    artifact.unlink()
    for validate in (True, False):
        with pytest.raises(ArtifactMissingError):
            load_bundle(bundle_dir, validate=validate)


def _rewrite_manifest(bundle_dir: Path, **changes: Any) -> None:
    path = bundle_dir / MANIFEST_NAME
    document = json.loads(path.read_bytes())
    document.update(changes)
    path.write_bytes(canonical_json(document))


def test_consistent_hash_but_invalid_artifact_is_refused(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path)
    bad = b'{"text": "ok"}\n{"nope": 1}\n'
    (bundle_dir / "data.jsonl").write_bytes(bad)
    _rewrite_manifest(
        bundle_dir, artifact_sha256=hashlib.sha256(bad).hexdigest(), artifact_size=len(bad)
    )
    with pytest.raises(InvalidArtifactError, match="line 2") as info:
        load_bundle(bundle_dir)
    assert info.value.report.invalid == 1
    assert load_bundle(bundle_dir, validate=False).manifest.artifact_size == len(bad)


def test_wrong_example_count_is_refused(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path)
    _rewrite_manifest(bundle_dir, example_count=len(RECORDS) + 1)
    with pytest.raises(ArtifactMismatchError, match="examples"):
        load_bundle(bundle_dir)


def test_check_artifact_bytes_and_paths(tmp_path: Path) -> None:
    data = b'{"text": "x"}\n'
    digest = hashlib.sha256(data).digest()
    path = tmp_path / "a.jsonl"
    path.write_bytes(data)
    check_artifact(data, digest, len(data))
    check_artifact(path, digest, len(data))
    with pytest.raises(ArtifactMismatchError):
        check_artifact(data + b" ", digest, len(data))
    with pytest.raises(ArtifactMismatchError):
        check_artifact(data, bytes(32), len(data))
    with pytest.raises(ArtifactMissingError):
        check_artifact(tmp_path / "missing", digest, len(data))
    with pytest.raises(ArtifactMissingError):
        check_artifact(tmp_path, digest, len(data))  # a directory is not an artifact


def test_update_bundle_keeps_identity_and_replaces_artifact(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path)
    first = load_bundle(bundle_dir)
    new_source = _jsonl(tmp_path, [*RECORDS, {"text": "new example"}], "v2.jsonl")
    second = update_bundle(bundle_dir, new_source, description="now with four examples")
    assert second == load_bundle(bundle_dir)
    assert second.manifest.dataset_id == first.manifest.dataset_id
    assert second.manifest.created_by == first.manifest.created_by
    assert second.manifest.name == first.manifest.name
    assert second.manifest.metadata == first.manifest.metadata
    assert second.manifest.description == "now with four examples"
    assert second.manifest.example_count == 4
    assert second.manifest_hash != first.manifest_hash
    assert second.artifact_path.read_bytes() == new_source.read_bytes()


def test_update_refuses_invalid_jsonl_and_keeps_the_bundle(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path)
    before = load_bundle(bundle_dir)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 5}\n')
    with pytest.raises(DatasetValidationError, match="line 1"):
        update_bundle(bundle_dir, bad)
    assert load_bundle(bundle_dir) == before
    with pytest.raises(ManifestError):
        update_bundle(tmp_path / "not-a-bundle", _jsonl(tmp_path))


def test_writes_leave_no_temp_files(tmp_path: Path) -> None:
    bundle_dir = _init(tmp_path)
    update_bundle(bundle_dir, _jsonl(tmp_path, [{"text": "v2"}], "v2.jsonl"))
    assert _leftover_temp_files(tmp_path) == []
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["data.jsonl", MANIFEST_NAME]


def test_interrupted_manifest_write_leaves_no_temp_file_and_no_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(dst).name == MANIFEST_NAME:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        _init(tmp_path)
    monkeypatch.undo()
    bundle_dir = tmp_path / "bundle"
    assert _leftover_temp_files(tmp_path) == []
    assert not (bundle_dir / MANIFEST_NAME).exists()
    with pytest.raises(ManifestError, match="not a bundle"):
        load_bundle(bundle_dir)


def test_interrupted_update_never_loads_a_mismatched_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle_dir = _init(tmp_path)
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(dst).name == MANIFEST_NAME:
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="power cut"):
        update_bundle(bundle_dir, _jsonl(tmp_path, [{"text": "v2"}], "v2.jsonl"))
    monkeypatch.undo()
    assert _leftover_temp_files(tmp_path) == []
    with pytest.raises(ArtifactMismatchError):  # new artifact, old manifest: fails closed
        load_bundle(bundle_dir)
    assert read_manifest(bundle_dir).example_count == len(RECORDS)
