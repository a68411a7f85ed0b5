"""``cotune demo``: one whole private fine-tuning session in one process.

Embedded chain, temporary local storage, dev enclave: an owner opens a session, three
contributors with different data and one poisoned contributor submit, the aggregator
gates, trains, seals and finalizes, and every accepted contributor downloads the same
adapter. Exits non-zero when any check fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cotune.aggregator.enclave import DEV_MODE_WARNING
from cotune.cli.output import JsonOption, console, err_console, print_json, training_bars
from cotune.training.synthetic import POISONS

if TYPE_CHECKING:  # the session stack loads only when the demo runs
    from cotune.sdk.demo import DemoResult


def demo(
    poison: str = typer.Option(
        "random_text",
        "--poison",
        help=f"The poisoned contributor's data: {', '.join(sorted(POISONS))}.",
    ),
    examples: int = typer.Option(200, "--examples", min=20, help="Examples per clean contributor."),
    as_json: bool = JsonOption,
) -> None:
    """Run a full session: open, 3 clean + 1 poisoned submit, gate, train, finalize, download."""
    from cotune.sdk.demo import run_demo

    if poison not in POISONS:
        raise typer.BadParameter(
            f"choose one of {', '.join(sorted(POISONS))}", param_hint="--poison"
        )
    if not as_json:
        console.print("[bold]cotune demo[/]: a whole session on an embedded chain.")
        console.print(f"[yellow]{DEV_MODE_WARNING}[/]")

    def notify(message: str) -> None:
        if not as_json:
            console.print(f"[dim]•[/] {message}")

    try:
        with training_bars(enabled=not as_json) as bars:
            result = run_demo(
                examples_per_contributor=examples,
                poison=poison,
                notify=notify,
                on_train_step=lambda label, *step: bars(f"train {label}", *step),
            )
    except RuntimeError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print_json(result.to_dict())
    else:
        _print_report(result)
    if not result.ok:
        raise typer.Exit(1)


def _print_report(result: DemoResult) -> None:
    people = Table(title="Contributors")
    for column in ("contributor", "decision", "reason", "score", "weight"):
        people.add_column(column, justify="right" if column in ("score", "weight") else "left")
    for c in result.contributors:
        score = "" if c["score"] is None else f"{c['score']:.3f}"
        people.add_row(c["name"], c["decision"], c["reason"], score, str(c["weight"]))
    console.print(people)

    solo = [(f"solo: {name}", f"{loss:.4f}") for name, loss in result.eval_loss["solo"].items()]
    joint = ("[bold]joint[/]", f"[bold]{result.eval_loss['joint']:.4f}[/]")
    _two_columns(
        "Eval loss on the owner's held-out set (lower is better)",
        ("model", "loss"),
        [("base", f"{result.eval_loss['base']:.4f}"), *solo, joint],
    )
    _accuracy_table(result.task_accuracy)
    _two_columns(
        "Gas per transaction",
        ("transaction", "gas"),
        [(name, f"{gas:,}") for name, gas in result.gas.items()],
    )
    _two_columns(
        "Seconds per stage",
        ("stage", "seconds"),
        [(name, f"{seconds:.2f}") for name, seconds in result.seconds.items()],
    )

    digest = next(iter(result.adapter_sha256.values()), "")
    console.print(f"adapter sha256 (every accepted contributor): {digest}")
    for name, ok in result.checks.items():
        console.print(f"{'[green]✓[/]' if ok else '[red]✗[/]'} {name}")
    console.print("[bold green]ok[/]" if result.ok else "[bold red]FAILED[/]")


def _accuracy_table(accuracy: dict[str, Any]) -> None:
    """Task accuracy of the base, each solo and the joint adapter, overall and per domain."""
    rows = [("base", accuracy["base"])]
    rows += [(f"solo: {name}", scored) for name, scored in accuracy["solo"].items()]
    rows.append(("[bold]joint[/]", accuracy["joint"]))
    domains = sorted({d for _, scored in rows for d in scored["by_tag"]})
    table = Table(title="Task accuracy on the held-out set (greedy replies with the answer)")
    table.add_column("model")
    for column in ("all", *domains):
        table.add_column(column, justify="right")
    for name, scored in rows:
        by_tag = scored["by_tag"]
        table.add_row(
            name,
            f"{scored['accuracy']:.0%}",
            *(f"{by_tag[d]['accuracy']:.0%}" if d in by_tag else "-" for d in domains),
        )
    console.print(table)


def _two_columns(title: str, columns: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    """Print a table of names and right-aligned values."""
    table = Table(title=title)
    table.add_column(columns[0])
    table.add_column(columns[1], justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
