"""``cotune eval``: loss, perplexity and task accuracy of the base model and of adapters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cotune.cli.output import JsonOption, console, fail, print_json
from cotune.cli.training_options import BaseModelOption, load_files, load_model

if TYPE_CHECKING:  # the training stack loads only when the command runs
    from cotune.training.base_model import BaseModel
    from cotune.training.data import Example


def score(base: BaseModel, examples: Sequence[Example], model: Any | None = None) -> dict[str, Any]:
    """Loss, perplexity, tokens and task accuracy (overall and per tag) of ``model``."""
    from cotune.training.evaluate import evaluate

    return evaluate(base, examples, model=model, accuracy=True).to_dict()


def evaluate_adapter(base: BaseModel, adapter: Path, examples: Sequence[Example]) -> dict[str, Any]:
    """:func:`score` of ``adapter`` on top of ``base``, which is then taken off again."""
    from peft import PeftModel

    if not (adapter / "adapter_config.json").is_file():
        fail(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
    model = PeftModel.from_pretrained(base.model, str(adapter))
    try:
        return score(base, examples, model)
    finally:
        model.unload()


def eval_command(
    eval_file: Path = typer.Argument(..., help="Eval JSONL file."),
    adapters: list[Path] = typer.Option(
        [], "--adapter", "-a", help="Adapter directory to evaluate (repeatable)."
    ),
    base_model: str = BaseModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Evaluate the base model, and each --adapter on top of it, on EVAL_FILE.

    Loss and perplexity per answer token, and task accuracy: the share of prompts whose
    greedy reply carries the reference answer (a line's "answer" field, else its reply),
    per "tag" too when the file tags its lines.

    Example: `cotune eval data/eval.jsonl -a adapters/clinic -a adapters/joint`
    """
    eval_set = load_files([eval_file])[0]
    base = load_model(base_model)
    results = {"base": score(base, eval_set.examples)}
    for adapter in adapters:
        results[str(adapter)] = evaluate_adapter(base, adapter, eval_set.examples)
    if as_json:
        print_json(results)
        return
    tags = sorted({t for r in results.values() for t in r["task_accuracy"]["by_tag"]})
    table = Table("model", "eval loss", "perplexity", "tokens", "accuracy", *tags)
    for name, r in results.items():
        accuracy = r["task_accuracy"]
        by_tag = accuracy["by_tag"]
        table.add_row(
            name,
            f"{r['loss']:.4f}",
            f"{r['perplexity']:.2f}",
            str(r["tokens"]),
            _percent(accuracy),
            *(_percent(by_tag[t]) if t in by_tag else "-" for t in tags),
        )
    console.print(table)


def _percent(accuracy: dict[str, Any]) -> str:
    return f"{100 * accuracy['accuracy']:.0f}% of {accuracy['scored']}"
