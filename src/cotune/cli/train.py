"""``cotune train``: fine-tune a LoRA adapter on JSONL files and save it in PEFT layout."""

from __future__ import annotations

from pathlib import Path

import typer

from cotune.cli.output import JsonOption, console, fail, print_json, step_progress
from cotune.cli.training_options import (
    AlphaOption,
    BaseModelOption,
    BatchSizeOption,
    DropoutOption,
    EpochsOption,
    LastLayersOption,
    LearningRateOption,
    MaxStepsOption,
    RankOption,
    SeedOption,
    SeqLenOption,
    TargetModulesOption,
    hyperparams,
    load_files,
    load_model,
)


def train(
    data: list[Path] = typer.Argument(..., help="JSONL files (messages, instruction or text)."),
    out: Path = typer.Option(..., "--out", "-o", help="Adapter directory to create."),
    eval_file: Path | None = typer.Option(
        None, "--eval", help="Eval JSONL: report base and adapter loss in cotune.json."
    ),
    base_model: str = BaseModelOption,
    balance: bool = typer.Option(
        False,
        "--balance",
        help="Resample files to equal size so the largest does not drown the rest.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    rank: int = RankOption,
    alpha: int = AlphaOption,
    dropout: float = DropoutOption,
    target_modules: str = TargetModulesOption,
    learning_rate: float = LearningRateOption,
    epochs: int = EpochsOption,
    max_steps: int | None = MaxStepsOption,
    batch_size: int = BatchSizeOption,
    seq_len: int = SeqLenOption,
    seed: int = SeedOption,
    last_layers: int = LastLayersOption,
    as_json: bool = JsonOption,
) -> None:
    """Train one LoRA adapter on the union of DATA files; every file is validated first."""
    from cotune.training.adapter import build_manifest, save_adapter
    from cotune.training.evaluate import evaluate
    from cotune.training.manifest import DatasetRecord
    from cotune.training.trainer import balance_sources, train_lora

    hp = hyperparams(
        rank,
        alpha,
        dropout,
        target_modules,
        learning_rate,
        epochs,
        max_steps,
        batch_size,
        seq_len,
        seed,
        last_layers,
    )
    if out.exists() and not overwrite:
        fail(f"{out} exists: choose another --out or pass --overwrite")
    datasets = load_files(data)
    eval_set = load_files([eval_file])[0] if eval_file else None
    base = load_model(base_model)
    examples = (
        balance_sources([d.examples for d in datasets], seed)
        if balance
        else [e for d in datasets for e in d.examples]
    )
    eval_base = (
        evaluate(base, eval_set.examples, max_length=hp.seq_len, accuracy=True)
        if eval_set
        else None
    )
    try:
        with step_progress("training", enabled=not as_json) as on_step:
            result = train_lora(base, examples, hp, on_step=on_step)
    except ValueError as exc:
        fail(f"{exc}: nothing was trained")
    eval_adapter = (
        evaluate(base, eval_set.examples, model=result.model, max_length=hp.seq_len, accuracy=True)
        if eval_set
        else None
    )
    manifest = build_manifest(
        base,
        hp,
        [DatasetRecord(Path(d.source).name, d.sha256, len(d)) for d in datasets],
        steps=result.steps,
        tokens=result.tokens,
        eval_base=eval_base,
        eval_adapter=eval_adapter,
        extra={"balanced": balance},
    )
    try:
        save_adapter(result.model, out, manifest, overwrite=overwrite)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}")
    summary = {
        "adapter": str(out),
        "steps": result.steps,
        "tokens": result.tokens,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "final_train_loss": result.final_loss,
        "eval": manifest["eval"],
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"trained {result.steps} steps on {sum(len(d) for d in datasets)} examples "
        f"({result.tokens} tokens, {result.tokens_per_second:.0f} tok/s); saved {out}"
    )
    if eval_base and eval_adapter and eval_base.task_accuracy and eval_adapter.task_accuracy:
        console.print(
            f"eval loss: base {eval_base.loss:.4f} -> adapter {eval_adapter.loss:.4f} "
            f"(perplexity {eval_base.perplexity:.2f} -> {eval_adapter.perplexity:.2f}); "
            f"task accuracy {eval_base.task_accuracy.accuracy:.0%} -> "
            f"{eval_adapter.task_accuracy.accuracy:.0%}"
        )
