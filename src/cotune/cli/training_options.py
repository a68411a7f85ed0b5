"""Options shared by the training commands: the base model, hyperparameters, data files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cotune.cli.output import err_console, fail
from cotune.training.config import DEFAULT_TARGET_MODULES, TINY_MODEL_ID, LoraHyperparams
from cotune.training.data import Dataset, DatasetValidationError, load_jsonl

if TYPE_CHECKING:  # the training stack loads only when a command needs a model
    from cotune.training.base_model import BaseModel

BaseModelOption = typer.Option(
    TINY_MODEL_ID,
    "--base-model",
    help=f"A Hugging Face model directory, or {TINY_MODEL_ID} (built locally, no download).",
)


def load_files(paths: list[Path], consequence: str = "nothing was trained") -> list[Dataset]:
    """Validate every file; on any error print each bad line and exit (``consequence``)."""
    datasets: list[Dataset] = []
    failed = False
    for path in paths:
        try:
            datasets.append(load_jsonl(path))
        except DatasetValidationError as exc:
            err_console.print(exc.report.describe(), highlight=False, markup=False, soft_wrap=True)
            failed = True
        except OSError as exc:
            err_console.print(f"{path}: {exc.strerror or exc}", highlight=False)
            failed = True
    if failed:
        fail(f"validation failed: {consequence}")
    return datasets


def load_model(base_model: str) -> BaseModel:
    """Load the base model, turning a bad path into a one-line error."""
    from cotune.training.base_model import load_base

    try:
        return load_base(base_model)
    except (OSError, ValueError) as exc:
        fail(str(exc))


def hyperparams(
    rank: int,
    alpha: int,
    dropout: float,
    target_modules: str,
    learning_rate: float,
    epochs: int,
    max_steps: int | None,
    batch_size: int,
    seq_len: int,
    seed: int,
    last_layers: int = 0,
) -> LoraHyperparams:
    """Build hyperparameters from CLI values, failing with every problem listed."""
    try:
        return LoraHyperparams(
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
            learning_rate=learning_rate,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            seq_len=seq_len,
            seed=seed,
            last_layers=last_layers,
        )
    except ValueError as exc:
        fail(str(exc))


DEFAULTS = LoraHyperparams()
RankOption = typer.Option(DEFAULTS.rank, "--rank", help="LoRA rank r.")
AlphaOption = typer.Option(DEFAULTS.alpha, "--alpha", help="LoRA alpha (scale = alpha / r).")
DropoutOption = typer.Option(DEFAULTS.dropout, "--dropout", help="LoRA dropout.")
TargetModulesOption = typer.Option(
    ",".join(DEFAULT_TARGET_MODULES), "--target-modules", help="Comma-separated module names."
)
LearningRateOption = typer.Option(DEFAULTS.learning_rate, "--lr", help="Peak learning rate.")
EpochsOption = typer.Option(DEFAULTS.epochs, "--epochs", help="Passes over the data.")
MaxStepsOption = typer.Option(None, "--max-steps", help="Stop after this many steps.")
BatchSizeOption = typer.Option(
    DEFAULTS.batch_size, "--batch-size", help="Examples per optimisation step."
)
SeqLenOption = typer.Option(
    DEFAULTS.seq_len, "--seq-len", help="Longest example in tokens (longer ones are cut)."
)
SeedOption = typer.Option(DEFAULTS.seed, "--seed", help="Seed: same inputs + seed = same bytes.")
LastLayersOption = typer.Option(
    DEFAULTS.last_layers,
    "--last-layers",
    help="LoRA on the model's last N decoder layers only (0: every layer).",
)
