"""``cotune enclave``: what a contributor pins before encrypting to an enclave."""

from __future__ import annotations

import typer

from cotune.aggregator.measurement import code_measurement, measured_files
from cotune.cli.output import JsonOption, console, print_json

app = typer.Typer(help="The enclave's code measurement.", no_args_is_help=True)


@app.command("measurement")
def measurement(as_json: bool = JsonOption) -> None:
    """Print the hash of the installed cotune code and contract artifacts.

    An enclave reports this value in its attestation; pass it to `cotune submit
    --measurement` to refuse any enclave running other code.
    """
    value = "0x" + code_measurement().hex()
    if as_json:
        print_json({"measurement": value, "files": len(measured_files())})
    else:
        console.print(value, soft_wrap=True)
