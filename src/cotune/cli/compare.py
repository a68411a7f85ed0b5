"""``cotune compare A B``: two adapters side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cotune.cli.evaluate import evaluate_adapter
from cotune.cli.output import JsonOption, console, fail, print_json
from cotune.cli.training_options import BaseModelOption, load_files, load_model


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested manifest fields as dotted rows; lists of datasets by name."""
    if isinstance(value, dict):
        rows: dict[str, str] = {}
        for key, inner in value.items():
            rows |= _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list):
        names = [str(v.get("name", v)) if isinstance(v, dict) else str(v) for v in value]
        return {prefix: ", ".join(names)}
    if isinstance(value, float):
        return {prefix: f"{value:.6g}"}
    return {prefix: str(value)}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def compare(
    adapter_a: Path = typer.Argument(..., help="First adapter directory."),
    adapter_b: Path = typer.Argument(..., help="Second adapter directory."),
    eval_file: Path | None = typer.Option(None, "--eval", help="Also evaluate both on this JSONL."),
    base_model: str = BaseModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Manifests side by side, per-module |dW| and cosine similarity, eval loss and accuracy.

    Example: `cotune compare adapters/clinic adapters/joint --eval data/eval.jsonl`
    """
    from cotune.training.adapter import read_manifest
    from cotune.training.compare import compare_deltas

    try:
        manifests = [read_manifest(adapter_a), read_manifest(adapter_b)]
        deltas = compare_deltas(adapter_a, adapter_b)
    except (OSError, ValueError, KeyError) as exc:
        fail(str(exc))
    evals: list[Any] = [None, None]
    if eval_file is not None:
        examples = load_files([eval_file])[0].examples
        base = load_model(base_model)
        evals = [evaluate_adapter(base, d, examples) for d in (adapter_a, adapter_b)]
    fields = ("base_model", "hyperparameters", "datasets", "training", "eval")
    if as_json:
        print_json(
            {
                "manifests": {str(adapter_a): manifests[0], str(adapter_b): manifests[1]},
                "modules": [d.__dict__ for d in deltas],
                "eval": {str(adapter_a): evals[0], str(adapter_b): evals[1]},
            }
        )
        return
    side = Table("field", str(adapter_a), str(adapter_b))
    flat = [_flatten({f: m.get(f) for f in fields}) for m in manifests]
    for key in sorted(set(flat[0]) | set(flat[1])):
        left, right = flat[0].get(key, "-"), flat[1].get(key, "-")
        side.add_row(key, left, right if right != left else f"[dim]{right}[/]")
    if eval_file is not None:
        side.add_row(
            f"eval loss on {eval_file.name}", _fmt(evals[0]["loss"]), _fmt(evals[1]["loss"])
        )
        accuracy = [e["task_accuracy"] for e in evals]
        side.add_row(
            f"task accuracy on {eval_file.name}", _fmt(accuracy[0]["accuracy"]),
            _fmt(accuracy[1]["accuracy"]),
        )  # fmt: skip
        for tag in sorted(set(accuracy[0]["by_tag"]) | set(accuracy[1]["by_tag"])):
            side.add_row(
                f"  accuracy on {tag}",
                *(_fmt(a["by_tag"][tag]["accuracy"]) if tag in a["by_tag"] else "-"
                  for a in accuracy),
            )  # fmt: skip
    console.print(side)
    modules = Table("module", "|dW| A", "|dW| B", "cosine")
    for d in deltas:
        modules.add_row(d.module, _fmt(d.norm_a), _fmt(d.norm_b), _fmt(d.cosine))
    console.print(modules)
