"""A session's quality rules and the gate's reason codes, without the training stack.

Owners, contributors and the SDK read and hash the rules; only the enclave runs the gate
(:mod:`cotune.training.gate`), so this module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from enum import IntEnum
from typing import Any

from cotune.training.config import LoraHyperparams
from cotune.training.data import MAX_LINE_BYTES, DataLimits

SCORE_SCALE = 1_000_000
"""Scores go on chain as integers: nats x 1e6."""


class Reason(IntEnum):
    """Why a contribution was accepted or rejected (the on-chain ``reasonCode``)."""

    ACCEPTED = 0
    INVALID_LINES = 1
    TOO_FEW_EXAMPLES = 2
    DUPLICATES = 3
    CROSS_DUPLICATES = 4
    CONTRADICTIONS = 5
    BELOW_FLOOR = 6
    OUTLIER = 7
    UNREADABLE = 8
    """Set by the aggregator: the ciphertext could not be fetched, verified or decrypted."""
    PROVENANCE = 9
    """Set by the aggregator: the dataset claim inside the submission does not hold."""
    UNINTELLIGIBLE = 10
    """The base model finds the data far less predictable than the eval set (random text)."""
    TOO_LARGE = 11
    """Over a cap of the session's rules: bytes, examples or tokens of one contribution."""
    UNUSABLE_KEY = 12
    """Set by the aggregator: nothing can be sealed to the HPKE key committed on chain."""


@dataclass(frozen=True)
class GateRules:
    """A session's quality rules; its canonical hash is committed before anyone submits."""

    min_examples: int = 20
    max_invalid_rate: float = 0.0
    max_duplicate_rate: float = 0.3
    max_cross_duplicate_rate: float = 0.5
    max_contradiction_rate: float = 0.2
    min_contradiction_checks: int = 5
    score_floor: float = 0.07
    outlier_k: float = 2.0
    min_relative_spread: float = 0.2
    max_data_loss_ratio: float = 1.75
    probe_fraction: float = 0.25
    probe_min_steps: int = 4
    probe_token_budget: int = 60_000
    probe_learning_rate: float = 1e-2
    probe_rank: int = 8
    probe_last_layers: int = 1
    max_contribution_bytes: int = 32 << 20
    """Plaintext bytes of one contribution (its ciphertext may be this plus the stream's
    overhead); a larger one is rejected as ``too_large`` without being fetched."""
    max_line_bytes: int = MAX_LINE_BYTES
    """Bytes of one JSONL line; a longer line is an invalid line, never parsed."""
    max_examples: int = 50_000
    """Examples (non-blank lines) of one contribution; more is ``too_large``."""
    max_tokens: int = 4_000_000
    """Tokens of one contribution once encoded (each example cut to the sequence length)."""
    seed: int = 0

    def __post_init__(self) -> None:
        # Equal rules must hash equally: store 1 and 1.0 alike, refuse other types.
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"gate rule {spec.name} must be a number, got {value!r}")
            if spec.type == "float":
                object.__setattr__(self, spec.name, float(value))
            elif value != int(value):
                raise ValueError(f"gate rule {spec.name} must be a whole number, got {value!r}")
            else:
                object.__setattr__(self, spec.name, int(value))

        if self.probe_last_layers < 0:
            raise ValueError(
                f"gate rule probe_last_layers must be >= 0, got {self.probe_last_layers}"
            )
        if self.max_data_loss_ratio <= 0:
            raise ValueError(
                f"gate rule max_data_loss_ratio must be > 0, got {self.max_data_loss_ratio}"
            )
        for name in ("max_contribution_bytes", "max_line_bytes", "max_examples", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"gate rule {name} must be >= 1, got {getattr(self, name)}")

    def data_limits(self) -> DataLimits:
        """The caps every contribution's JSONL is validated under."""
        return DataLimits(
            max_bytes=self.max_contribution_bytes,
            max_line_bytes=self.max_line_bytes,
            max_examples=self.max_examples,
        )

    def canonical_json(self) -> str:
        """Sorted-key JSON with no whitespace: the bytes that are hashed."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def hash(self) -> bytes:
        """SHA-256 of the canonical JSON (the session's ``gateRulesHash``)."""
        return hashlib.sha256(self.canonical_json().encode()).digest()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GateRules:
        """Parse, refusing unknown keys."""
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown gate rules: {', '.join(unknown)}")
        return cls(**raw)

    def probe_hyperparams(self, examples: int) -> LoraHyperparams:
        """Hyperparameters of the probe of a contribution of ``examples`` examples.

        The probe sees ``probe_fraction`` of one pass over the contribution (at least
        ``probe_min_steps`` steps, at most ``probe_token_budget`` tokens), so the gate costs
        a fixed share of the joint training whatever the contribution's size.
        """
        batch = LoraHyperparams.batch_size
        steps = max(self.probe_min_steps, math.ceil(self.probe_fraction * examples / batch))
        return LoraHyperparams(
            rank=self.probe_rank,
            alpha=2 * self.probe_rank,
            learning_rate=self.probe_learning_rate,
            max_steps=steps,
            warmup_steps=1,
            last_layers=self.probe_last_layers,
            seed=self.seed,
        )
