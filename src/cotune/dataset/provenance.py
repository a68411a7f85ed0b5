"""Dataset provenance inside an encrypted submission, and its checks.

A contributor who submits a published dataset version says so with a
:class:`DatasetClaim`: the publisher's signed version entry (dataset id, version,
manifest hash, artifact SHA-256 and size, publisher, signature) and the EIP-712 domain
it was signed under. The claim travels *inside* the ciphertext, in a small envelope::

    cotune-submission/1                 (a line)
    {"provenance": [<claim>]}           (canonical JSON, one line)
    <the JSONL data, byte for byte>

so only the enclave sees which dataset a contributor used. The header may also carry
``"commitment_salt"`` (64 hex digits), the contributor's salt for the commitment to its
data that the enclave publishes instead of the data's plain hash (so a published report
never confirms a guessed dataset; see :mod:`cotune.aggregator.bindings`); an envelope
then may carry no claim at all. A plaintext without the magic first line is plain JSONL
with no claim and no salt. The enclave accepts a claim only when the signature recovers
to the entry's publisher and the data's SHA-256 and size are the entry's artifact: the
contributor submitted exactly the signed version's bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotune.common import jsonsafe
from cotune.common.errors import CotuneError
from cotune.crypto.eip712 import Eip712Domain
from cotune.dataset.bundle import load_bundle
from cotune.dataset.versions import (
    OFFLINE_DOMAIN,
    VERSION_LOG_NAME,
    SignedVersion,
    VersionLog,
    VersionLogError,
    domain_from_dict,
)

SUBMISSION_MAGIC = b"cotune-submission/1\n"
"""First line of a submission plaintext that carries provenance."""
MAX_HEADER_BYTES = 1 << 16
"""A provenance header longer than this is refused unread."""


SALT_BYTES = 32


class ProvenanceError(CotuneError):
    """A provenance claim is malformed, or does not hold for the data it came with."""


@dataclass(frozen=True)
class Submission:
    """A decrypted submission: the JSONL data, its dataset claims and its commitment salt."""

    data: bytes
    claims: list[DatasetClaim]
    salt: bytes | None = None


@dataclass(frozen=True)
class DatasetClaim:
    """A contributor's statement: this data is one signed version of a published dataset."""

    signed: SignedVersion
    domain: Eip712Domain = OFFLINE_DOMAIN

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the signed entry's members plus the domain."""
        return self.signed.to_dict() | {"domain": self.domain.to_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DatasetClaim:
        """Parse :meth:`to_dict`'s form; ``ProvenanceError`` names what is wrong."""
        if not isinstance(raw, Mapping) or "domain" not in raw:
            raise ProvenanceError("a dataset claim is an object with a 'domain' member")
        try:
            domain = domain_from_dict(raw["domain"])
            signed = SignedVersion.from_dict({k: v for k, v in raw.items() if k != "domain"})
        except (ValueError, KeyError, TypeError, VersionLogError) as exc:
            raise ProvenanceError(f"malformed dataset claim: {exc}") from None
        return cls(signed, domain)

    @property
    def name(self) -> str:
        """``<dataset id> v<version>``."""
        return f"{self.signed.entry.dataset_id} v{self.signed.entry.version}"

    def verify_signature(self) -> None:
        """Raise ``ProvenanceError`` unless the entry's publisher signed it under ``domain``."""
        entry, name = self.signed.entry, self.name
        try:
            signer = self.signed.signer(self.domain)
        except VersionLogError as exc:
            raise ProvenanceError(f"{name}: {exc}") from None
        if signer != entry.publisher:
            raise ProvenanceError(
                f"{name}: signed by {signer}, but the entry names publisher {entry.publisher}"
            )

    def check(self, data: bytes) -> None:
        """Raise ``ProvenanceError`` unless the publisher signed this entry and ``data`` is it."""
        self.verify_signature()
        entry, name = self.signed.entry, self.name
        if len(data) != entry.artifact_size or hashlib.sha256(data).digest() != (
            entry.artifact_sha256
        ):
            # Nothing about the submitted bytes goes into the message: it reaches the
            # public report, where a hash or size would confirm a guessed dataset.
            raise ProvenanceError(
                f"{name}: the submitted data is not the signed artifact "
                f"({entry.artifact_size} bytes, SHA-256 {entry.artifact_sha256.hex()})"
            )


def resolve_dataset(reference: str) -> tuple[DatasetClaim, Path | None]:
    """The claim for ``BUNDLE_DIR@VERSION`` or ``URL@VERSION``, and the artifact when local.

    The version log is fetched (a URL's public ``/versions``) or read (the bundle's
    ``versions.json``) and verified offline first. The path is the bundle's artifact
    when the version is the bundle's head (a bundle directory keeps only that one).
    """
    source, at, number = reference.rpartition("@")
    if not at or not source or not number.isdigit():
        raise ProvenanceError(
            f"--dataset {reference!r}: expected BUNDLE_DIR@VERSION or URL@VERSION"
        )
    version = int(number)
    remote = source.startswith(("http://", "https://"))
    if remote:
        from cotune.dataset.client import fetch_version_log

        log = fetch_version_log(source)
    else:
        log = VersionLog.load(Path(source) / VERSION_LOG_NAME)
        log.verify()
    signed = log.get(version)
    if signed is None:
        raise ProvenanceError(f"--dataset {reference!r}: the log has versions {log.numbers}")
    artifact = None
    if not remote and log.head == signed:
        artifact = load_bundle(Path(source), validate=False).artifact_path
    return DatasetClaim(signed, log.domain), artifact


def wrap_submission(
    data: bytes, claims: Sequence[DatasetClaim], *, salt: bytes | None = None
) -> bytes:
    """The plaintext to encrypt: ``data`` alone, or the envelope carrying ``claims``/``salt``."""
    if len(claims) > 1:
        raise ValueError("a submission carries at most one dataset claim")
    if not claims and salt is None:
        return data
    header: dict[str, Any] = {"provenance": [c.to_dict() for c in claims]}
    if salt is not None:
        if len(salt) != SALT_BYTES:
            raise ValueError(f"a commitment salt is {SALT_BYTES} bytes")
        header["commitment_salt"] = salt.hex()
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return SUBMISSION_MAGIC + encoded + b"\n" + data


def unwrap_submission(plaintext: bytes) -> Submission:
    """Split a decrypted submission into its data, claims and salt (none for plain JSONL)."""
    if not plaintext.startswith(SUBMISSION_MAGIC):
        return Submission(plaintext, [])
    rest = plaintext[len(SUBMISSION_MAGIC) :]
    end = rest.find(b"\n", 0, MAX_HEADER_BYTES + 1)
    if end < 0:
        raise ProvenanceError(f"the provenance header has no end within {MAX_HEADER_BYTES} bytes")
    try:
        header = jsonsafe.loads(rest[:end])
    except ValueError as exc:  # not JSON, not UTF-8, too deep, or a number too long
        raise ProvenanceError(f"the provenance header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not {"provenance"} <= set(header) <= {
        "provenance",
        "commitment_salt",
    }:
        raise ProvenanceError(
            "the provenance header is an object with the members 'provenance' and, "
            "optionally, 'commitment_salt'"
        )
    raw_claims = header["provenance"]
    if not isinstance(raw_claims, list) or len(raw_claims) > 1:
        raise ProvenanceError("a submission carries at most one dataset claim")
    salt = header.get("commitment_salt")
    if salt is not None and (
        not isinstance(salt, str) or not re.fullmatch(f"[0-9a-f]{{{2 * SALT_BYTES}}}", salt)
    ):
        raise ProvenanceError(f"commitment_salt must be {2 * SALT_BYTES} lowercase hex digits")
    return Submission(
        rest[end + 1 :],
        [DatasetClaim.from_dict(c) for c in raw_claims],
        None if salt is None else bytes.fromhex(salt),
    )


__all__ = [
    "SALT_BYTES",
    "SUBMISSION_MAGIC",
    "DatasetClaim",
    "ProvenanceError",
    "Submission",
    "resolve_dataset",
    "unwrap_submission",
    "wrap_submission",
]
