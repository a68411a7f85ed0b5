"""``cotune gate``: dry-run a session's quality rules on local files, as the enclave would."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cotune.cli.output import JsonOption, console, err_console, fail, print_json
from cotune.cli.training_options import BaseModelOption, load_files, load_model
from cotune.training.rules import GateRules


def _rules(path: Path | None) -> GateRules:
    if path is None:
        return GateRules()
    try:
        return GateRules.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        fail(f"{path}: not valid gate rules: {exc}")


def gate(
    data: list[Path] = typer.Argument(..., help="One JSONL file per contributor."),
    eval_file: Path = typer.Option(..., "--eval", help="The owner's held-out eval JSONL."),
    rules_file: Path | None = typer.Option(
        None, "--rules", help="Gate rules JSON (defaults shown by --show-rules)."
    ),
    show_rules: bool = typer.Option(False, "--show-rules", help="Print the rules and their hash."),
    base_model: str = BaseModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Decide on each contributor file: structural checks, then a probe LoRA scored on --eval.

    Files with invalid lines are reported, not trained on. The rules hash printed here
    is what a session commits on chain before anyone submits.
    """
    from cotune.training.gate import run_gate

    rules = _rules(rules_file)
    if show_rules:
        print_json({"rules": json.loads(rules.canonical_json()), "hash": "0x" + rules.hash().hex()})
        return
    eval_set = load_files([eval_file])[0]
    contributions = []
    for path in data:
        try:
            contributions.append((path.name, path.read_bytes()))
        except OSError as exc:
            fail(f"{path}: {exc.strerror or exc}")
    base = load_model(base_model)

    def progress(contributor: str, stage: str) -> None:
        if not as_json:
            err_console.print(f"[dim]{stage}: {contributor}[/]")

    report = run_gate(base, contributions, list(eval_set.examples), rules, on_progress=progress)
    if as_json:
        print_json(report.to_dict())
        return
    table = Table("contributor", "decision", "reason", "score", "weight")
    for d in report.decisions:
        verdict = "[green]accept[/]" if d.accepted else "[red]reject[/]"
        score = "-" if d.score is None else f"{d.score:+.4f}"
        table.add_row(d.contributor, verdict, d.reason.name.lower(), score, str(d.weight))
    console.print(table)
    console.print(
        f"base eval loss {report.base_eval.loss:.4f}; rules hash 0x{rules.hash().hex()}",
        soft_wrap=True,
    )
