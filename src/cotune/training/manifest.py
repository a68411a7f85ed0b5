"""The names and records of an adapter's ``cotune.json``, importable without torch or peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MANIFEST_NAME = "cotune.json"
MANIFEST_FORMAT = "cotune-adapter/1"


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset the adapter was trained on: its plain SHA-256, or a salted commitment.

    A session's enclave records a commitment that only the contributor can check (a
    plain hash would confirm a guessed dataset to anyone reading the public report); the
    plain hash only where it is public anyway, for a claimed published dataset.
    """

    name: str
    sha256: str | None
    examples: int
    commitment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (only the identifying fields that are set)."""
        found = {"sha256": self.sha256, "commitment": self.commitment}
        return {"name": self.name, "examples": self.examples} | {
            k: v for k, v in found.items() if v is not None
        }
