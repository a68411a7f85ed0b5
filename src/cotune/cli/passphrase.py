"""Where a keystore passphrase comes from: an environment variable, else a hidden prompt."""

from __future__ import annotations

import os
import sys

import typer

from cotune.cli.output import fail

DEFAULT_PASSPHRASE_ENV = "COTUNE_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)

PassphraseEnvOption = typer.Option(
    DEFAULT_PASSPHRASE_ENV,
    "--passphrase-env",
    metavar="VAR",
    help="Environment variable holding the passphrase; when unset you are prompted.",
)


def read_passphrase(env_var: str, *, confirm: bool) -> str:
    """Read the passphrase from ``env_var`` or, on a terminal, a hidden prompt."""
    value = os.environ.get(env_var)
    if value is not None:
        if not value:
            fail(f"environment variable {env_var} is set but empty")
        return value
    if not sys.stdin.isatty():
        fail(f"no passphrase: set {env_var} or run in a terminal to be prompted")
    entered: str = typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    if not entered:
        fail("the passphrase cannot be empty")
    return entered
