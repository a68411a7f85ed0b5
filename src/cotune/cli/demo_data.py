"""``cotune demo-data``: deterministic synthetic contributors, poisons and an eval set."""

from __future__ import annotations

from pathlib import Path

import typer

from cotune.cli.output import JsonOption, console, fail, print_json
from cotune.training.data import write_jsonl
from cotune.training.synthetic import demo_data


def demo_data_command(
    out: Path = typer.Argument(..., help="Directory to write the files into."),
    examples: int = typer.Option(200, "--examples", help="Examples per contributor."),
    eval_per_domain: int = typer.Option(20, "--eval-per-domain", help="Eval examples per domain."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
    as_json: bool = JsonOption,
) -> None:
    """Write three contributors with distinct sub-domains, poisoned variants and eval.jsonl.

    Poisons: random_text, shuffled_answers, duplicated_spam, off_domain (in poisoned/).
    """
    if examples < 1 or eval_per_domain < 1:
        fail("--examples and --eval-per-domain must be at least 1")
    data = demo_data(examples_per_contributor=examples, eval_per_domain=eval_per_domain, seed=seed)
    written: dict[str, str] = {}
    for name, records in data.contributors.items():
        written[name] = str(out / f"{name}.jsonl")
        write_jsonl(out / f"{name}.jsonl", records)
    for name, records in data.poisoned.items():
        written[f"poisoned/{name}"] = str(out / "poisoned" / f"{name}.jsonl")
        write_jsonl(out / "poisoned" / f"{name}.jsonl", records)
    written["eval"] = str(out / "eval.jsonl")
    write_jsonl(out / "eval.jsonl", data.eval_set)
    if as_json:
        print_json(written)
        return
    for name, path in written.items():
        console.print(f"{name:32} {path}", highlight=False)
