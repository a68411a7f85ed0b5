"""Comparing two adapters: per-module weight deltas and how aligned they are."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file


@dataclass(frozen=True)
class ModuleDelta:
    """One adapted module in two adapters: |dW| of each and the cosine between them."""

    module: str
    norm_a: float | None
    norm_b: float | None
    cosine: float | None


def lora_deltas(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """The dense update dW = (alpha / r) * B @ A of every adapted module."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scale = float(config["lora_alpha"]) / float(config["r"])
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    deltas: dict[str, torch.Tensor] = {}
    for key, a in weights.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        b = weights[key.replace(".lora_A.", ".lora_B.")]
        deltas[module] = scale * (b.float() @ a.float())
    return deltas


def compare_deltas(a_dir: Path, b_dir: Path) -> list[ModuleDelta]:
    """Per-module norms and cosine similarity of two adapters' weight updates."""
    a, b = lora_deltas(a_dir), lora_deltas(b_dir)
    rows = []
    for module in sorted(set(a) | set(b)):
        da, db = a.get(module), b.get(module)
        cosine = None
        if da is not None and db is not None and da.shape == db.shape:
            denominator = float(da.norm() * db.norm())
            cosine = float((da * db).sum()) / denominator if denominator > 0 else math.nan
        rows.append(
            ModuleDelta(
                module,
                None if da is None else float(da.norm()),
                None if db is None else float(db.norm()),
                cosine,
            )
        )
    return rows
