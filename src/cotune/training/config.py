"""Hyperparameters of a LoRA run, as one serialisable dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

TINY_MODEL_ID = "cotune-tiny"
"""The built-in base model (see :mod:`cotune.training.tiny`)."""

DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass(frozen=True)
class LoraHyperparams:
    """What defines a LoRA fine-tuning run (with the data and the base model)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    learning_rate: float = 3e-3
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 8
    seq_len: int = 256
    seed: int = 0
    warmup_steps: int = 5
    last_layers: int = 0
    """LoRA on the model's last ``last_layers`` decoder layers only; 0: on every layer."""

    def __post_init__(self) -> None:
        problems = []
        if self.rank < 1:
            problems.append(f"rank must be >= 1, got {self.rank}")
        if self.alpha < 1:
            problems.append(f"alpha must be >= 1, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            problems.append("target_modules must name at least one module")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1 when set, got {self.max_steps}")
        if self.batch_size < 1 or self.seq_len < 8:
            problems.append("batch_size must be >= 1 and seq_len >= 8")
        if self.last_layers < 0:
            problems.append(f"last_layers must be >= 0, got {self.last_layers}")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if problems:
            raise ValueError("invalid hyperparameters: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        values = asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LoraHyperparams:
        """Parse, refusing unknown keys (a typo must not silently fall back to a default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown hyperparameters: {', '.join(unknown)}")
        values = dict(raw)
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)
