"""Dataset bundles: a directory holding ``manifest.json`` and one JSONL training artifact.

The manifest is stored in canonical JSON (sorted keys, no whitespace, UTF-8, no
trailing newline), so its SHA-256 is stable and is what a signed version entry
commits to (see :mod:`cotune.dataset.versions`). :func:`load_bundle` refuses a
manifest file that is not byte-for-byte canonical, and re-checks the artifact's
size and SHA-256 (and by default that it still validates as training JSONL)
against the manifest: a bundle either loads whole or raises a :class:`BundleError`.

Every write is atomic (temp file, fsync, rename); the artifact, the plaintext data,
is mode 0600 (the manifest holds only metadata and hashes). The artifact is written first
and the manifest last, so a bundle whose write was interrupted either has no
manifest or fails :func:`load_bundle` with an artifact mismatch; it never loads
with an artifact the manifest does not describe.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils.address import is_address, to_checksum_address

from cotune.common.atomic import write_bytes_atomic
from cotune.common.errors import CotuneError
from cotune.training.data import (
    DatasetValidationError,
    ValidationReport,
    load_dataset,
    validate_bytes,
)

MANIFEST_NAME = "manifest.json"
"""The manifest's file name inside a bundle directory."""
DEFAULT_ARTIFACT_NAME = "data.jsonl"
"""The training artifact's default file name inside a bundle directory."""
MANIFEST_FORMAT = "cotune-dataset-manifest/1"
"""The ``format`` member of every manifest this module writes and reads."""
RESERVED_NAMES = frozenset({MANIFEST_NAME, "versions.json"})
"""File names an artifact may not take (the manifest and the usual version log)."""

_DATASET_ID = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_UINT64 = 2**64 - 1
_HASH_CHUNK = 1 << 20
_FIELDS = frozenset(
    {
        "format",
        "dataset_id",
        "name",
        "description",
        "license",
        "artifact",
        "example_count",
        "artifact_sha256",
        "artifact_size",
        "created_by",
        "metadata",
    }
)


class BundleError(CotuneError):
    """A bundle is missing, malformed, or does not match its manifest."""


class BundleExistsError(BundleError):
    """``init_bundle`` was pointed at a directory that already holds a manifest."""


class ManifestError(BundleError):
    """``manifest.json`` is missing, not JSON, or has missing, unknown or invalid fields."""


class NonCanonicalManifestError(ManifestError):
    """``manifest.json`` parses, but its bytes are not the canonical form, so its hash drifts."""


class ArtifactError(BundleError):
    """The training artifact does not match what the manifest (or a version entry) says."""


class ArtifactMissingError(ArtifactError):
    """The artifact file the manifest names is absent or unreadable."""


class ArtifactMismatchError(ArtifactError):
    """The artifact's size, SHA-256 or example count differs from the manifest's."""


class InvalidArtifactError(ArtifactError):
    """The artifact no longer validates as training JSONL; ``report`` lists every bad line."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.describe())


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (non-ASCII unescaped), finite numbers only."""
    try:
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate in some string
        raise ValueError(f"not encodable as UTF-8: {exc.reason}") from None


def validate_dataset_id(dataset_id: object) -> str:
    """Return ``dataset_id`` if it is a slug or a lowercase UUID, else raise ``ValueError``.

    Allowed: 1 to 64 characters of ``a-z``, ``0-9``, ``.``, ``_`` and ``-``, starting and
    ending with a letter or digit (a canonical UUID such as
    ``123e4567-e89b-12d3-a456-426614174000`` is one such slug).
    """
    if not isinstance(dataset_id, str) or not _DATASET_ID.fullmatch(dataset_id):
        raise ValueError(
            f"dataset id must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting and "
            f"ending with a letter or digit, got {dataset_id!r}"
        )
    return dataset_id


def validate_artifact_name(name: object) -> str:
    """Return ``name`` if an artifact may take it as its file name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _ARTIFACT_NAME.fullmatch(name) or name in RESERVED_NAMES:
        reserved = ", ".join(sorted(RESERVED_NAMES))
        raise ValueError(
            f"artifact name must be a plain file name (letters, digits, '.', '_', '-'; "
            f"not {reserved}), got {name!r}"
        )
    return name


def _count(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_UINT64:
        raise ValueError(f"{what} must be an integer in [{minimum}, 2**64), got {value!r}")
    return value


def _text(value: object, what: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        kind = "a string" if allow_empty else "a non-empty string"
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    return value


@dataclass(frozen=True)
class DatasetManifest:
    """What a bundle says about itself; its canonical JSON is hashed into version entries.

    ``artifact_sha256`` is 64 lowercase hex digits (``sha256sum`` style). Construction
    validates every field, checksums ``created_by`` and deep-copies ``metadata``
    (a JSON object: string keys, JSON values, finite numbers).
    """

    dataset_id: str
    name: str
    example_count: int
    artifact_sha256: str
    artifact_size: int
    created_by: str
    description: str = ""
    license: str = ""
    artifact: str = DEFAULT_ARTIFACT_NAME
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_dataset_id(self.dataset_id)
        _text(self.name, "name", allow_empty=False)
        _text(self.description, "description")
        _text(self.license, "license")
        validate_artifact_name(self.artifact)
        _count(self.example_count, "example_count", 1)
        _count(self.artifact_size, "artifact_size", 0)
        if not isinstance(self.artifact_sha256, str) or not _SHA256_HEX.fullmatch(
            self.artifact_sha256
        ):
            raise ValueError(
                f"artifact_sha256 must be 64 lowercase hex digits, got {self.artifact_sha256!r}"
            )
        if not isinstance(self.created_by, str) or not is_address(self.created_by):
            raise ValueError(f"created_by must be an Ethereum address, got {self.created_by!r}")
        object.__setattr__(self, "created_by", to_checksum_address(self.created_by))
        if not isinstance(self.metadata, dict) or not all(
            isinstance(k, str) for k in self.metadata
        ):
            raise ValueError("metadata must be a JSON object with string keys")
        try:
            copied = json.loads(canonical_json(self.metadata))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata is not canonical-JSON serialisable: {exc}") from None
        object.__setattr__(self, "metadata", copied)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (including the ``format`` member)."""
        return {
            "format": MANIFEST_FORMAT,
            "dataset_id": self.dataset_id,
            "name": self.name,
            "description": self.description,
            "license": self.license,
            "artifact": self.artifact,
            "example_count": self.example_count,
            "artifact_sha256": self.artifact_sha256,
            "artifact_size": self.artifact_size,
            "created_by": self.created_by,
            "metadata": json.loads(canonical_json(self.metadata)),
        }

    def canonical(self) -> bytes:
        """The canonical JSON bytes: exactly what ``manifest.json`` holds."""
        return canonical_json(self.to_dict())

    def hash(self) -> bytes:
        """SHA-256 of :meth:`canonical` (32 bytes): the ``manifestHash`` of a version entry."""
        return hashlib.sha256(self.canonical()).digest()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DatasetManifest:
        """Parse a manifest document; ``ManifestError`` on unknown, missing or invalid fields."""
        unknown = sorted(set(raw) - _FIELDS)
        if unknown:
            raise ManifestError(f"unknown manifest fields: {', '.join(unknown)}")
        missing = sorted(_FIELDS - set(raw))
        if missing:
            raise ManifestError(f"missing manifest fields: {', '.join(missing)}")
        if raw["format"] != MANIFEST_FORMAT:
            raise ManifestError(
                f"manifest format must be {MANIFEST_FORMAT!r}, got {raw['format']!r}"
            )
        try:
            return cls(
                dataset_id=raw["dataset_id"],
                name=raw["name"],
                description=raw["description"],
                license=raw["license"],
                artifact=raw["artifact"],
                example_count=raw["example_count"],
                artifact_sha256=raw["artifact_sha256"],
                artifact_size=raw["artifact_size"],
                created_by=raw["created_by"],
                metadata=raw["metadata"],
            )
        except ValueError as exc:
            raise ManifestError(f"invalid manifest: {exc}") from None

    @classmethod
    def from_json(cls, data: bytes, *, canonical_only: bool = False) -> DatasetManifest:
        """Parse manifest bytes; with ``canonical_only`` refuse any non-canonical encoding.

        ``ManifestError`` when the bytes are not a valid manifest;
        ``NonCanonicalManifestError`` when they are but differ from :meth:`canonical`.
        """
        try:
            raw = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest is not UTF-8 JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ManifestError("manifest must be a JSON object")
        manifest = cls.from_dict(raw)
        if canonical_only and manifest.canonical() != data:
            raise NonCanonicalManifestError(
                "manifest.json is not in canonical form (sorted keys, no whitespace, UTF-8, "
                "checksummed address, no trailing newline); rewrite it with the canonical bytes"
            )
        return manifest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk: its directory and its (verified) manifest."""

    directory: Path
    manifest: DatasetManifest

    @property
    def manifest_path(self) -> Path:
        """Where the manifest lives."""
        return self.directory / MANIFEST_NAME

    @property
    def artifact_path(self) -> Path:
        """Where the training artifact lives."""
        return self.directory / self.manifest.artifact

    @property
    def manifest_hash(self) -> bytes:
        """SHA-256 of the canonical manifest (32 bytes)."""
        return self.manifest.hash()


def sha256_file(path: Path) -> tuple[bytes, int]:
    """SHA-256 (32 bytes) and size of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.digest(), size


def _read_source(jsonl_path: Path) -> bytes:
    try:
        return Path(jsonl_path).read_bytes()
    except OSError as exc:
        raise ArtifactMissingError(f"cannot read {jsonl_path}: {exc.strerror or exc}") from None


def _write(directory: Path, manifest: DatasetManifest, data: bytes) -> Bundle:
    directory.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(directory / manifest.artifact, data, mode=0o600)
    write_bytes_atomic(directory / MANIFEST_NAME, manifest.canonical())
    return Bundle(directory, manifest)


def init_bundle(
    directory: Path,
    jsonl_path: Path,
    *,
    dataset_id: str,
    name: str,
    created_by: str,
    description: str = "",
    license: str = "",  # noqa: A002 - the manifest field's name
    artifact_name: str = DEFAULT_ARTIFACT_NAME,
    metadata: Mapping[str, Any] | None = None,
) -> Bundle:
    """Create a bundle in ``directory`` from the training JSONL at ``jsonl_path``.

    The JSONL is validated first (``DatasetValidationError`` lists every bad line);
    the very bytes that were validated and hashed are then copied in atomically,
    and ``manifest.json`` is written canonically, last. ``BundleExistsError`` if
    ``directory`` already holds a manifest (use :func:`update_bundle` for a new
    version); ``ValueError`` for an invalid field.
    """
    directory = Path(directory)
    if (directory / MANIFEST_NAME).exists():
        raise BundleExistsError(f"{directory} already holds a bundle ({MANIFEST_NAME} exists)")
    data = _read_source(jsonl_path)
    dataset = load_dataset(data, str(jsonl_path))
    manifest = DatasetManifest(
        dataset_id=dataset_id,
        name=name,
        description=description,
        license=license,
        artifact=artifact_name,
        example_count=len(dataset),
        artifact_sha256=dataset.sha256,
        artifact_size=len(data),
        created_by=created_by,
        metadata=dict(metadata or {}),
    )
    return _write(directory, manifest, data)


def update_bundle(
    directory: Path,
    jsonl_path: Path,
    *,
    name: str | None = None,
    description: str | None = None,
    license: str | None = None,  # noqa: A002 - the manifest field's name
    metadata: Mapping[str, Any] | None = None,
) -> Bundle:
    """Replace a bundle's artifact with a new JSONL (validated first), keeping its identity.

    ``dataset_id``, ``created_by`` and the artifact's file name are kept; the other
    descriptive fields are kept unless given. The existing manifest must parse
    canonically (its old artifact is not checked: this is how a damaged artifact is
    replaced). Returns the new bundle, ready for ``VersionLog.append``.
    """
    directory = Path(directory)
    old = read_manifest(directory)
    data = _read_source(jsonl_path)
    dataset = load_dataset(data, str(jsonl_path))
    manifest = DatasetManifest(
        dataset_id=old.dataset_id,
        name=old.name if name is None else name,
        description=old.description if description is None else description,
        license=old.license if license is None else license,
        artifact=old.artifact,
        example_count=len(dataset),
        artifact_sha256=dataset.sha256,
        artifact_size=len(data),
        created_by=old.created_by,
        metadata=old.metadata if metadata is None else dict(metadata),
    )
    return _write(directory, manifest, data)


def read_manifest(directory: Path) -> DatasetManifest:
    """Parse ``directory/manifest.json``, refusing a non-canonical file (artifact not read)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{directory} is not a bundle: {MANIFEST_NAME} is missing") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    return DatasetManifest.from_json(data, canonical_only=True)


def check_artifact(
    data_or_path: bytes | Path, sha256: bytes, size: int, what: str = "artifact"
) -> None:
    """Raise unless the bytes (or the file) have exactly this SHA-256 and size (fail closed).

    ``ArtifactMissingError`` when the file cannot be read, ``ArtifactMismatchError``
    when the size or the hash differs.
    """
    if isinstance(data_or_path, bytes | bytearray | memoryview):
        actual_size = len(data_or_path)
        actual_sha = hashlib.sha256(data_or_path).digest() if actual_size == size else b""
    else:
        path = Path(data_or_path)
        try:
            status = path.stat()
            if not stat.S_ISREG(status.st_mode):
                raise ArtifactMissingError(f"{what} {path} is not a regular file")
            actual_size, actual_sha = status.st_size, b""
            if actual_size == size:  # hash only what could match; re-read size wins
                actual_sha, actual_size = sha256_file(path)
        except OSError as exc:
            raise ArtifactMissingError(
                f"cannot read {what} {path}: {exc.strerror or exc}"
            ) from None
    if actual_size != size:
        raise ArtifactMismatchError(f"{what} is {actual_size} bytes, expected {size}")
    if actual_sha != sha256:
        raise ArtifactMismatchError(
            f"{what} SHA-256 is {actual_sha.hex()}, expected {sha256.hex()}"
        )


def load_bundle(directory: Path, *, validate: bool = True) -> Bundle:
    """Load and verify a bundle: canonical manifest, then the artifact's size and SHA-256.

    With ``validate`` (the default) the artifact is also re-validated as training JSONL
    and its example count compared with the manifest's. Raises ``ManifestError``,
    ``NonCanonicalManifestError``, ``ArtifactMissingError``, ``ArtifactMismatchError``
    or ``InvalidArtifactError``, all :class:`BundleError`.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    path = directory / manifest.artifact
    expected = bytes.fromhex(manifest.artifact_sha256)
    if not validate:
        check_artifact(path, expected, manifest.artifact_size, f"artifact {manifest.artifact}")
        return Bundle(directory, manifest)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactMissingError(f"cannot read artifact {path}: {exc.strerror or exc}") from None
    check_artifact(data, expected, manifest.artifact_size, f"artifact {manifest.artifact}")
    examples, report = validate_bytes(data, str(path))
    if not report.ok:
        raise InvalidArtifactError(report)
    if len(examples) != manifest.example_count:
        raise ArtifactMismatchError(
            f"artifact {manifest.artifact} has {len(examples)} examples, "
            f"the manifest says {manifest.example_count}"
        )
    return Bundle(directory, manifest)


__all__ = [
    "DEFAULT_ARTIFACT_NAME",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "ArtifactError",
    "ArtifactMismatchError",
    "ArtifactMissingError",
    "Bundle",
    "BundleError",
    "BundleExistsError",
    "DatasetManifest",
    "DatasetValidationError",
    "InvalidArtifactError",
    "ManifestError",
    "NonCanonicalManifestError",
    "canonical_json",
    "check_artifact",
    "init_bundle",
    "load_bundle",
    "read_manifest",
    "sha256_file",
    "update_bundle",
    "validate_artifact_name",
    "validate_dataset_id",
]
