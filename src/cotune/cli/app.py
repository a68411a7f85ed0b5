"""The ``cotune`` entry point: global options and the subcommands."""

from __future__ import annotations

import typer

from cotune import __version__
from cotune.cli import (
    aggregator,
    compare,
    dataset,
    demo,
    demo_data,
    devnet,
    doctor,
    enclave,
    evaluate,
    gate,
    keys,
    provenance,
    session,
    submit,
    train,
)

app = typer.Typer(
    name="cotune",
    help=(
        "Private multi-party fine-tuning: several parties train one shared LoRA adapter "
        "on their combined data without anyone seeing anyone else's raw data."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.add_typer(keys.app, name="keys")
app.add_typer(devnet.app, name="devnet")
app.add_typer(session.app, name="session")
app.add_typer(aggregator.app, name="aggregator")
app.add_typer(enclave.app, name="enclave")
app.add_typer(dataset.app, name="dataset")
app.command("submit")(submit.submit)
app.command("provenance")(provenance.provenance)
app.command("download")(submit.download)
app.command("doctor")(doctor.doctor)
app.command("demo")(demo.demo)
app.command("train")(train.train)
app.command("eval")(evaluate.eval_command)
app.command("gate")(gate.gate)
app.command("compare")(compare.compare)
app.command("demo-data")(demo_data.demo_data_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cotune {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Private multi-party fine-tuning of one shared LoRA adapter."""


def main() -> None:
    """Console-script entry point."""
    app()
