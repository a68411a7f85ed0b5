"""A dataset's version log: a hash chain of EIP-712-signed entries, verifiable offline.

Each version of a dataset is one :class:`VersionEntry`::

    DatasetVersion(string datasetId, uint64 version, bytes32 manifestHash,
                   bytes32 artifactSha256, uint64 artifactSize, bytes32 previous,
                   uint64 timestamp, address publisher)

signed by the publisher's secp256k1 key as EIP-712 typed data (low-s, v in {27, 28},
as OpenZeppelin's ECDSA accepts). ``manifestHash`` is the SHA-256 of the bundle's
canonical ``manifest.json``; ``previous`` is the :meth:`VersionEntry.hash` of the
entry before (32 zero bytes for v1).

Entry hash
    :meth:`VersionEntry.hash` is the full EIP-712 *digest*
    (``keccak256(0x1901 || domainSeparator || hashStruct(entry))``), the very value
    the signature is over and a contract would pass to ``ecrecover``. Using the digest
    rather than the bare struct hash binds every chain link to the log's domain too.

Domain
    The domain is ``name="cotune Dataset"``, ``version="1"``, with a chain id and a
    verifying contract that are a parameter of the log, stored in the log file's
    header and part of every signature. The default, :data:`OFFLINE_DOMAIN`, is chain
    id 0 and the zero address: no chain has id 0 and no contract lives at the zero
    address, so an offline log's signatures can never be mistaken for (or replayed
    as) statements addressed to a deployed contract. A log meant to be checked on
    chain is created with :func:`dataset_domain` naming that chain and contract.

Publisher rule
    A log has exactly one publisher: whoever signed v1. ``append`` refuses any other
    key, and ``verify`` raises :class:`ForeignSignerError` for an entry validly signed
    by any other key. Without ``expected_publisher`` ``verify`` trusts v1's signer
    (trust on first use): a log replaced wholesale by someone else's self-consistent
    log only fails against ``expected_publisher`` (or ``known_head``).

What ``verify`` raises (each a :class:`VersionLogError`). It checks every signature
first, then duplicate claims, numbering, ``previous`` links, timestamps and finally
``known_head``, and raises the first failure:

- :class:`TamperedEntryError`: a signature is malformed or does not recover to the
  entry's own ``publisher`` field, i.e. some field (or the signature) changed after
  signing. An entry re-signed by another key but still naming the publisher also
  lands here: the signature cannot tell a forger from random damage.
- :class:`ForeignSignerError`: a signature is valid for its entry, but the entry's
  publisher is not the log's (v1's, or ``expected_publisher``).
- :class:`DatasetMismatchError`: a validly signed entry of another dataset.
- :class:`ForkError`: two different entries claim the same version number or the
  same predecessor; or an entry's ``previous`` is not the hash of the entry before
  it although the numbering is intact (entries from two diverging histories); or
  the entry at a ``known_head``'s version differs from it.
- :class:`VersionOrderError`: version numbers are not increasing (reordered or
  duplicated entries), or timestamps go backwards.
- :class:`MissingVersionError`: numbers increase but skip (a removed entry: its
  successor's ``previous`` link points at nothing in the log), the log is empty, or
  it ends before a ``known_head``'s version (removed from the end).

The log is one JSON file (``versions.json`` by convention), rewritten atomically on
every append. It assumes a single writer at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from eth_utils.exceptions import ValidationError as EthKeysValidationError

from cotune.common import jsonsafe
from cotune.common.atomic import write_bytes_atomic
from cotune.common.errors import CotuneError
from cotune.crypto.eip712 import (
    Eip712Domain,
    TypeFields,
    recover_typed_data_signer,
    sign_typed_data,
    typed_data_digest,
)
from cotune.crypto.errors import SignatureError
from cotune.dataset.bundle import Bundle, check_artifact, validate_dataset_id

DATASET_DOMAIN_NAME = "cotune Dataset"
DATASET_DOMAIN_VERSION = "1"
OFFLINE_CHAIN_ID = 0
OFFLINE_VERIFYING_CONTRACT = "0x" + "00" * 20
VERSION_LOG_NAME = "versions.json"
"""The conventional file name of a version log."""
LOG_FORMAT = "cotune-dataset-versions/1"
"""The ``format`` member of a version log file."""
ZERO_HASH = bytes(32)
"""The ``previous`` of v1."""
PRIMARY_TYPE = "DatasetVersion"
DATASET_VERSION_TYPES: dict[str, TypeFields] = {
    PRIMARY_TYPE: (
        ("datasetId", "string"),
        ("version", "uint64"),
        ("manifestHash", "bytes32"),
        ("artifactSha256", "bytes32"),
        ("artifactSize", "uint64"),
        ("previous", "bytes32"),
        ("timestamp", "uint64"),
        ("publisher", "address"),
    )
}
_MAX_UINT64 = 2**64 - 1
_ENTRY_FIELDS = frozenset(
    {
        "dataset_id",
        "version",
        "manifest_hash",
        "artifact_sha256",
        "artifact_size",
        "previous",
        "timestamp",
        "publisher",
    }
)
_DOMAIN_FIELDS = frozenset({"name", "version", "chainId", "verifyingContract"})


def dataset_domain(
    chain_id: int = OFFLINE_CHAIN_ID, verifying_contract: str = OFFLINE_VERIFYING_CONTRACT
) -> Eip712Domain:
    """The EIP-712 domain of dataset version entries (offline by default: chain 0, zero address)."""
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or not 0 <= chain_id < 2**256:
        raise ValueError(f"chain id must be an integer in [0, 2**256), got {chain_id!r}")
    if not isinstance(verifying_contract, str) or not is_address(verifying_contract):
        raise ValueError(f"verifying contract must be an address, got {verifying_contract!r}")
    return Eip712Domain(
        DATASET_DOMAIN_NAME,
        DATASET_DOMAIN_VERSION,
        chain_id,
        to_checksum_address(verifying_contract),
    )


OFFLINE_DOMAIN = dataset_domain()
"""The default domain of a log not tied to any chain or contract."""


class VersionLogError(CotuneError):
    """A version log is malformed, fails verification, or refuses an append."""


class LogFormatError(VersionLogError):
    """The log file is missing, not JSON, or has missing, unknown or invalid members."""


class TamperedEntryError(VersionLogError):
    """An entry's signature is malformed or does not match the entry: it changed after signing."""


class ForeignSignerError(VersionLogError):
    """An entry is validly signed, but by someone other than the log's publisher."""


class DatasetMismatchError(VersionLogError):
    """An entry (or a bundle being appended) belongs to another dataset."""


class ForkError(VersionLogError):
    """The log holds entries of two diverging histories (or diverges from a known head)."""


class VersionOrderError(VersionLogError):
    """Entries are out of order: version numbers not increasing, or time going backwards."""


class MissingVersionError(VersionLogError):
    """Versions are missing: a gap in the numbering, an empty log, or a truncated end."""


class UnchangedBundleError(VersionLogError):
    """``append`` was given the bundle the head already publishes (same manifest hash)."""


def _uint64(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_UINT64:
        raise ValueError(f"{what} must be an integer in [{minimum}, 2**64), got {value!r}")
    return value


def _bytes32(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {value!r}")
    return value


def _address(value: object, what: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"{what} must be an Ethereum address, got {value!r}")
    return to_checksum_address(value)


def _from_hex(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"{what} must be a 0x-prefixed hex string, got {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ValueError(f"{what} is not valid hex: {value!r}") from None


@dataclass(frozen=True)
class VersionEntry:
    """One version of a dataset, as signed (``publisher`` is stored checksummed)."""

    dataset_id: str
    version: int
    manifest_hash: bytes
    artifact_sha256: bytes
    artifact_size: int
    previous: bytes
    timestamp: int
    publisher: str

    def __post_init__(self) -> None:
        validate_dataset_id(self.dataset_id)
        _uint64(self.version, "version", 1)
        _bytes32(self.manifest_hash, "manifest_hash")
        _bytes32(self.artifact_sha256, "artifact_sha256")
        _uint64(self.artifact_size, "artifact_size")
        _bytes32(self.previous, "previous")
        _uint64(self.timestamp, "timestamp")
        object.__setattr__(self, "publisher", _address(self.publisher, "publisher"))

    def message(self) -> dict[str, Any]:
        """The EIP-712 ``DatasetVersion`` message."""
        return {
            "datasetId": self.dataset_id,
            "version": self.version,
            "manifestHash": self.manifest_hash,
            "artifactSha256": self.artifact_sha256,
            "artifactSize": self.artifact_size,
            "previous": self.previous,
            "timestamp": self.timestamp,
            "publisher": self.publisher,
        }

    def hash(self, domain: Eip712Domain = OFFLINE_DOMAIN) -> bytes:
        """The EIP-712 digest under ``domain``: what is signed and what the next ``previous`` is."""
        return typed_data_digest(domain, DATASET_VERSION_TYPES, PRIMARY_TYPE, self.message())

    def sign(self, account: LocalAccount, domain: Eip712Domain = OFFLINE_DOMAIN) -> SignedVersion:
        """Sign as ``account`` (which must be the entry's ``publisher``)."""
        if to_checksum_address(account.address) != self.publisher:
            raise ValueError(f"entry names publisher {self.publisher}, not {account.address}")
        signature = sign_typed_data(
            account, domain, DATASET_VERSION_TYPES, PRIMARY_TYPE, self.message()
        )
        return SignedVersion(self, signature)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: byte strings as ``0x`` hex."""
        return {
            "dataset_id": self.dataset_id,
            "version": self.version,
            "manifest_hash": "0x" + self.manifest_hash.hex(),
            "artifact_sha256": "0x" + self.artifact_sha256.hex(),
            "artifact_size": self.artifact_size,
            "previous": "0x" + self.previous.hex(),
            "timestamp": self.timestamp,
            "publisher": self.publisher,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> VersionEntry:
        """Parse :meth:`to_dict` output; ``ValueError`` on unknown, missing or invalid fields."""
        unknown = sorted(set(raw) - _ENTRY_FIELDS)
        missing = sorted(_ENTRY_FIELDS - set(raw))
        if unknown or missing:
            raise ValueError(
                f"entry fields unknown: {unknown or 'none'}, missing: {missing or 'none'}"
            )
        return cls(
            dataset_id=raw["dataset_id"],
            version=raw["version"],
            manifest_hash=_from_hex(raw["manifest_hash"], "manifest_hash"),
            artifact_sha256=_from_hex(raw["artifact_sha256"], "artifact_sha256"),
            artifact_size=raw["artifact_size"],
            previous=_from_hex(raw["previous"], "previous"),
            timestamp=raw["timestamp"],
            publisher=raw["publisher"],
        )


@dataclass(frozen=True)
class SignedVersion:
    """A version entry and its 65-byte ``r || s || v`` EIP-712 signature."""

    entry: VersionEntry
    signature: bytes

    def signer(self, domain: Eip712Domain = OFFLINE_DOMAIN) -> str:
        """Who signed this entry under ``domain``; ``TamperedEntryError`` if it does not recover."""
        try:
            return recover_typed_data_signer(
                domain, DATASET_VERSION_TYPES, PRIMARY_TYPE, self.entry.message(), self.signature
            )
        except (SignatureError, EthKeysValidationError, ValueError) as exc:
            raise TamperedEntryError(
                f"v{self.entry.version}: the signature is malformed ({exc})"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the entry's members plus ``signature``."""
        return {**self.entry.to_dict(), "signature": "0x" + self.signature.hex()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SignedVersion:
        """Parse :meth:`to_dict` output; ``ValueError`` when malformed."""
        if "signature" not in raw:
            raise ValueError("entry has no signature")
        fields = {k: v for k, v in raw.items() if k != "signature"}
        return cls(VersionEntry.from_dict(fields), _from_hex(raw["signature"], "signature"))


def verify_artifact(entry: VersionEntry | SignedVersion, data_or_path: bytes | Path) -> None:
    """Raise unless the artifact bytes (or file) have the entry's SHA-256 and size (fail closed).

    ``ArtifactMissingError`` when the file cannot be read, ``ArtifactMismatchError``
    otherwise (both :class:`~cotune.dataset.bundle.ArtifactError`).
    """
    e = entry.entry if isinstance(entry, SignedVersion) else entry
    check_artifact(data_or_path, e.artifact_sha256, e.artifact_size, f"v{e.version} artifact")


def verify_bundle(entry: VersionEntry | SignedVersion, bundle: Bundle) -> None:
    """Raise unless ``bundle`` is the one ``entry`` publishes: same manifest hash, same artifact.

    Pass a bundle from :func:`~cotune.dataset.bundle.load_bundle`; the artifact is
    hashed again here. Raises :class:`DatasetMismatchError` or an ``ArtifactError``.
    """
    e = entry.entry if isinstance(entry, SignedVersion) else entry
    if bundle.manifest.dataset_id != e.dataset_id:
        raise DatasetMismatchError(
            f"bundle is dataset {bundle.manifest.dataset_id!r}, v{e.version} is {e.dataset_id!r}"
        )
    if bundle.manifest_hash != e.manifest_hash:
        raise DatasetMismatchError(
            f"bundle manifest hash 0x{bundle.manifest_hash.hex()} is not v{e.version}'s "
            f"0x{e.manifest_hash.hex()}"
        )
    verify_artifact(e, bundle.artifact_path)


def domain_from_dict(raw: object) -> Eip712Domain:
    """A dataset domain from its JSON form; ``ValueError`` unless it is one."""
    if not isinstance(raw, dict) or set(raw) != _DOMAIN_FIELDS:
        raise ValueError(f"domain must have exactly {sorted(_DOMAIN_FIELDS)}")
    if raw["name"] != DATASET_DOMAIN_NAME or raw["version"] != DATASET_DOMAIN_VERSION:
        raise ValueError(
            f"domain must be name {DATASET_DOMAIN_NAME!r}, version {DATASET_DOMAIN_VERSION!r}, "
            f"got {raw['name']!r}, {raw['version']!r}"
        )
    return dataset_domain(raw["chainId"], raw["verifyingContract"])


def _check_domain(domain: Eip712Domain) -> Eip712Domain:
    try:
        return domain_from_dict(domain.to_dict())
    except ValueError as exc:
        raise ValueError(f"not a dataset domain: {exc}") from None


class VersionLog:
    """The signed versions of one dataset, kept in one JSON file.

    Build one with :meth:`create`, :meth:`load` or :meth:`open`; the constructor
    takes entries as they are (nothing is verified until :meth:`verify`).
    """

    def __init__(
        self,
        path: Path,
        domain: Eip712Domain = OFFLINE_DOMAIN,
        versions: Iterable[SignedVersion] = (),
    ) -> None:
        self._path = Path(path)
        self._domain = _check_domain(domain)
        self._versions: tuple[SignedVersion, ...] = tuple(versions)

    @classmethod
    def create(cls, path: Path, domain: Eip712Domain = OFFLINE_DOMAIN) -> VersionLog:
        """Start an empty log at ``path`` (written now); ``FileExistsError`` if one is there."""
        log = cls(path, domain)
        log.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(log.path, log.to_json(), overwrite=False)
        return log

    @classmethod
    def load(cls, path: Path) -> VersionLog:
        """Read a log file; ``LogFormatError`` if it is missing or malformed (nothing verified)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LogFormatError(f"cannot read version log {path}: {exc.strerror or exc}") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: bytes, path: Path) -> VersionLog:
        """A log from its file's bytes, as :meth:`load` reads them (``path``: where it lives)."""
        try:
            raw = jsonsafe.loads(data)
        except (ValueError, RecursionError) as exc:
            raise LogFormatError(f"{path} is not JSON: {exc}") from None
        try:
            if not isinstance(raw, dict) or set(raw) != {"format", "domain", "versions"}:
                raise ValueError("expected exactly the members format, domain and versions")
            if raw["format"] != LOG_FORMAT:
                raise ValueError(f"format must be {LOG_FORMAT!r}, got {raw['format']!r}")
            domain = domain_from_dict(raw["domain"])
            items = raw["versions"]
            if not isinstance(items, list):
                raise ValueError("versions must be a list")
            versions = []
            for i, item in enumerate(items, start=1):
                if not isinstance(item, dict):
                    raise ValueError(f"entry {i} must be an object")
                try:
                    versions.append(SignedVersion.from_dict(item))
                except ValueError as exc:
                    raise ValueError(f"entry {i}: {exc}") from None
        except ValueError as exc:
            raise LogFormatError(f"{path} is not a version log: {exc}") from None
        return cls(path, domain, versions)

    @classmethod
    def open(cls, path: Path, domain: Eip712Domain | None = None) -> VersionLog:
        """Load the log at ``path``, or create it (under ``domain``, default offline) if absent.

        ``LogFormatError`` if an existing log was started under a different ``domain``.
        """
        path = Path(path)
        if not path.exists():
            return cls.create(path, OFFLINE_DOMAIN if domain is None else domain)
        log = cls.load(path)
        if domain is not None and _check_domain(domain) != log.domain:
            raise LogFormatError(f"{path} was started under another domain: {log.domain}")
        return log

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    @property
    def domain(self) -> Eip712Domain:
        """The EIP-712 domain every entry is signed under."""
        return self._domain

    @property
    def entries(self) -> tuple[SignedVersion, ...]:
        """Every entry as stored, v1 first."""
        return self._versions

    @property
    def head(self) -> SignedVersion | None:
        """The latest entry (unverified), or ``None`` for an empty log."""
        return self._versions[-1] if self._versions else None

    def get(self, version: int) -> SignedVersion | None:
        """The entry numbered ``version`` (unverified), or ``None``."""
        return next((v for v in self._versions if v.entry.version == version), None)

    @property
    def numbers(self) -> list[int]:
        """The version numbers in the log, in log order."""
        return [v.entry.version for v in self._versions]

    def __len__(self) -> int:
        return len(self._versions)

    def entry_hash(self, entry: VersionEntry | SignedVersion) -> bytes:
        """:meth:`VersionEntry.hash` under this log's domain."""
        e = entry.entry if isinstance(entry, SignedVersion) else entry
        return e.hash(self._domain)

    def to_json(self) -> bytes:
        """The file's bytes (indented, sorted keys, trailing newline)."""
        document = {
            "format": LOG_FORMAT,
            "domain": self._domain.to_dict(),
            "versions": [v.to_dict() for v in self._versions],
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    def save(self) -> None:
        """Write the log atomically."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self._path, self.to_json())

    def append(
        self, bundle: Bundle, publisher: LocalAccount, timestamp: int | None = None
    ) -> SignedVersion:
        """Sign ``bundle`` as the next version, write the log atomically, return the entry.

        The existing log is verified first (its errors propagate: nothing is appended
        to a broken chain). Refused with :class:`DatasetMismatchError` for another
        dataset, :class:`ForeignSignerError` for a key other than v1's publisher,
        :class:`UnchangedBundleError` if the head already publishes this manifest, and
        :class:`VersionOrderError` for a ``timestamp`` earlier than the head's. The
        default timestamp is now, or the head's if the clock is behind it.
        """
        head = self.verify().entry if self._versions else None
        manifest = bundle.manifest
        address = to_checksum_address(publisher.address)
        now = int(time.time()) if timestamp is None else timestamp
        if head is not None:
            if manifest.dataset_id != head.dataset_id:
                raise DatasetMismatchError(
                    f"this log is dataset {head.dataset_id!r}, the bundle is "
                    f"{manifest.dataset_id!r}"
                )
            if address != head.publisher:
                raise ForeignSignerError(
                    f"this log's publisher is {head.publisher}; {address} may not append to it"
                )
            if bundle.manifest_hash == head.manifest_hash:
                raise UnchangedBundleError(f"v{head.version} already publishes this manifest")
            if timestamp is None:
                now = max(now, head.timestamp)
            elif timestamp < head.timestamp:
                raise VersionOrderError(
                    f"timestamp {timestamp} is before v{head.version}'s {head.timestamp}"
                )
        entry = VersionEntry(
            dataset_id=manifest.dataset_id,
            version=1 if head is None else head.version + 1,
            manifest_hash=bundle.manifest_hash,
            artifact_sha256=bytes.fromhex(manifest.artifact_sha256),
            artifact_size=manifest.artifact_size,
            previous=ZERO_HASH if head is None else head.hash(self._domain),
            timestamp=now,
            publisher=address,
        )
        signed = entry.sign(publisher, self._domain)
        previous_versions = self._versions
        self._versions = (*previous_versions, signed)
        try:
            self.save()
        except BaseException:
            self._versions = previous_versions
            raise
        return signed

    def verify(
        self,
        expected_publisher: str | None = None,
        *,
        known_head: VersionEntry | SignedVersion | None = None,
    ) -> SignedVersion:
        """Walk v1 → head offline and return the head; raise the first failure found.

        ``expected_publisher`` pins the publisher (otherwise v1's signer is trusted);
        ``known_head`` is an entry seen before, which the log must still contain at
        its version. See the module docstring for which error means what.
        """
        versions = self._versions
        if not versions:
            raise MissingVersionError(f"{self._path}: the log has no versions")
        anchor = None if expected_publisher is None else _address(expected_publisher, "publisher")
        hashes = self._check_signatures(versions, anchor)
        self._check_forks(versions, hashes)
        self._check_numbering(versions)
        self._check_links(versions, hashes)
        self._check_times(versions)
        if known_head is not None:
            self._check_known_head(versions, hashes, known_head)
        return versions[-1]

    def _check_signatures(
        self, versions: Sequence[SignedVersion], anchor: str | None
    ) -> list[bytes]:
        """Per entry: the signature recovers to its publisher, the log's one publisher."""
        hashes: list[bytes] = []
        dataset_id = versions[0].entry.dataset_id
        for position, signed in enumerate(versions, start=1):
            entry = signed.entry
            where = f"entry {position} (v{entry.version})"
            try:
                signer = signed.signer(self._domain)
            except TamperedEntryError as exc:
                raise TamperedEntryError(f"{where}: {exc}") from None
            if signer != entry.publisher:
                raise TamperedEntryError(
                    f"{where}: the signature does not match the entry (it recovers to {signer}, "
                    f"the entry names {entry.publisher}): the entry changed after signing"
                )
            if anchor is None:
                anchor = signer
            elif signer != anchor:
                raise ForeignSignerError(
                    f"{where} is validly signed by {signer}, but the log's publisher is {anchor}"
                )
            if entry.dataset_id != dataset_id:
                raise DatasetMismatchError(
                    f"{where} is dataset {entry.dataset_id!r}, the log is {dataset_id!r}"
                )
            hashes.append(entry.hash(self._domain))
        return hashes

    @staticmethod
    def _check_forks(versions: Sequence[SignedVersion], hashes: Sequence[bytes]) -> None:
        """No two different entries may claim one version number or one predecessor."""
        by_version: dict[int, bytes] = {}
        by_previous: dict[bytes, tuple[int, bytes]] = {}
        for signed, digest in zip(versions, hashes, strict=True):
            entry = signed.entry
            if by_version.setdefault(entry.version, digest) != digest:
                raise ForkError(f"two different entries claim v{entry.version}")
            first, first_digest = by_previous.setdefault(entry.previous, (entry.version, digest))
            if first_digest != digest:
                raise ForkError(
                    f"two different entries (v{first} and v{entry.version}) both follow "
                    f"0x{entry.previous.hex()}"
                )

    @staticmethod
    def _check_numbering(versions: Sequence[SignedVersion]) -> None:
        """Versions run 1..n in order: out of order, or a gap (a removed entry)."""
        numbers = [v.entry.version for v in versions]
        for position, (a, b) in enumerate(pairwise(numbers), start=2):
            if b <= a:
                raise VersionOrderError(
                    f"entry {position} is v{b} but follows v{a}: entries are reordered or "
                    f"duplicated (versions as stored: {numbers})"
                )
        if numbers != list(range(1, len(numbers) + 1)):
            missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
            raise MissingVersionError(
                f"versions {', '.join(f'v{n}' for n in missing)} are missing from the log"
            )

    @staticmethod
    def _check_links(versions: Sequence[SignedVersion], hashes: Sequence[bytes]) -> None:
        """Each entry's ``previous`` is the hash of the entry before it (zero for v1)."""
        expected = ZERO_HASH
        for signed, digest in zip(versions, hashes, strict=True):
            entry = signed.entry
            if entry.previous != expected:
                raise ForkError(
                    f"v{entry.version} does not extend the v{entry.version - 1} in this log "
                    f"(it follows 0x{entry.previous.hex()}, not 0x{expected.hex()}): the log "
                    f"mixes two diverging histories"
                )
            expected = digest

    @staticmethod
    def _check_times(versions: Sequence[SignedVersion]) -> None:
        """Timestamps never go backwards."""
        for a, b in pairwise(v.entry for v in versions):
            if b.timestamp < a.timestamp:
                raise VersionOrderError(
                    f"v{b.version} is dated {b.timestamp}, before v{a.version}'s {a.timestamp}"
                )

    def _check_known_head(
        self,
        versions: Sequence[SignedVersion],
        hashes: Sequence[bytes],
        known_head: VersionEntry | SignedVersion,
    ) -> None:
        known = known_head.entry if isinstance(known_head, SignedVersion) else known_head
        if known.version > len(versions):
            raise MissingVersionError(
                f"the log ends at v{len(versions)}, but v{known.version} was seen before: "
                f"versions were removed from its end"
            )
        if hashes[known.version - 1] != known.hash(self._domain):
            raise ForkError(f"this log's v{known.version} is not the v{known.version} seen before")


__all__ = [
    "DATASET_DOMAIN_NAME",
    "DATASET_DOMAIN_VERSION",
    "DATASET_VERSION_TYPES",
    "LOG_FORMAT",
    "OFFLINE_CHAIN_ID",
    "OFFLINE_DOMAIN",
    "OFFLINE_VERIFYING_CONTRACT",
    "VERSION_LOG_NAME",
    "ZERO_HASH",
    "DatasetMismatchError",
    "ForeignSignerError",
    "ForkError",
    "LogFormatError",
    "MissingVersionError",
    "SignedVersion",
    "TamperedEntryError",
    "UnchangedBundleError",
    "VersionEntry",
    "VersionLog",
    "VersionLogError",
    "VersionOrderError",
    "dataset_domain",
    "domain_from_dict",
    "verify_artifact",
    "verify_bundle",
]
