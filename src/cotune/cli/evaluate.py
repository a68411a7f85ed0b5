"""``cotune eval``: mean token loss and perplexity of the base model and of adapters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from cotune.cli.output import JsonOption, console, fail, print_json
from cotune.cli.training_options import BaseModelOption, load_files, load_model

if TYPE_CHECKING:  # the training stack loads only when the command runs
    from cotune.training.base_model import BaseModel
    from cotune.training.data import Example
    from cotune.training.evaluate import EvalResult


def evaluate_adapter(base: BaseModel, adapter: Path, examples: Sequence[Example]) -> EvalResult:
    """Evaluate ``adapter`` on top of ``base``, then take it off again."""
    from peft import PeftModel

    from cotune.training.evaluate import evaluate

    if not (adapter / "adapter_config.json").is_file():
        fail(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
    model = PeftModel.from_pretrained(base.model, str(adapter))
    try:
        return evaluate(base, examples, model=model)
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
    """Evaluate the base model, and each --adapter on top of it, on EVAL_FILE."""
    from cotune.training.evaluate import evaluate

    eval_set = load_files([eval_file])[0]
    base = load_model(base_model)
    results = {"base": evaluate(base, eval_set.examples)}
    for adapter in adapters:
        results[str(adapter)] = evaluate_adapter(base, adapter, eval_set.examples)
    if as_json:
        print_json({name: r.to_dict() for name, r in results.items()})
        return
    table = Table("model", "eval loss", "perplexity", "tokens")
    for name, r in results.items():
        table.add_row(name, f"{r.loss:.4f}", f"{r.perplexity:.2f}", str(r.tokens))
    console.print(table)
