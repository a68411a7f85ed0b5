"""The names and records of an adapter's ``cotune.json``, importable without torch or peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MANIFEST_NAME = "cotune.json"
MANIFEST_FORMAT = "cotune-adapter/1"


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset the adapter was trained on, by hash."""

    name: str
    sha256: str
    examples: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {"name": self.name, "sha256": self.sha256, "examples": self.examples}
