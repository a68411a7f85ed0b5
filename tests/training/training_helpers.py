"""Helpers shared by the training tests (imported by name, like ``chain_fixtures``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from cotune.training.data import Example, validate_lines


def lora_modules(model: torch.nn.Module) -> list[str]:
    """Names of the LoRA layers injected into ``model`` (empty for a clean base model)."""
    return [name for name, _ in model.named_modules() if "lora_" in name]


def to_examples(records: Sequence[dict[str, Any]], source: str = "records") -> list[Example]:
    """Validated examples of in-memory records (asserting they are all valid)."""
    examples, report = validate_lines([json.dumps(r) for r in records], source)
    assert report.ok, report.describe()
    return examples


def to_jsonl(records: Sequence[dict[str, Any]]) -> bytes:
    """Records as JSONL bytes, one per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
