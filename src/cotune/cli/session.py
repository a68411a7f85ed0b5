"""``cotune session``: open, follow, cancel and settle sessions (as the owner or anyone)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cotune.aggregator.spec import SessionSpec
from cotune.chain.limits import MAX_CONTRIBUTORS
from cotune.cli.output import JsonOption, console, friendly_errors, print_json
from cotune.cli.participant import (
    ChainOption,
    DeploymentOption,
    KeyOption,
    StorageOption,
    participant,
)
from cotune.training.config import LoraHyperparams
from cotune.training.rules import GateRules

app = typer.Typer(
    help="Open a session (owner), follow it, cancel it while open, claim what it owes you.",
    no_args_is_help=True,
)


@app.command("open")
def open_session(
    eval_set: Path = typer.Argument(..., exists=True, dir_okay=False, help="Held-out eval JSONL."),
    enclave_id: int = typer.Option(..., "--enclave-id", help="The enclave that will train."),
    quorum: int = typer.Option(3, "--quorum", min=1, help="Submissions needed to train."),
    max_contributors: int = typer.Option(
        10, "--max", min=1, max=MAX_CONTRIBUTORS, help="Training starts when this many submit."
    ),
    submit_window: int = typer.Option(
        3600, "--submit-window", help="Seconds open for submissions."
    ),
    training_window: int = typer.Option(
        86400, "--training-window", help="Seconds to finalize after."
    ),
    min_stake: int = typer.Option(0, "--min-stake", help="Stake each contributor puts up (wei)."),
    reward: int = typer.Option(0, "--reward", help="Reward pool for accepted contributors (wei)."),
    allow: list[str] = typer.Option([], "--allow", help="Allow-listed address (repeatable)."),
    rules: Path | None = typer.Option(
        None, "--rules", help="Gate rules JSON (fields to override)."
    ),
    epochs: int = typer.Option(LoraHyperparams.epochs, "--epochs", help="Joint training epochs."),
    measurement: str | None = typer.Option(
        None, "--measurement", help="Pin the enclave's code (hex)."
    ),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Encrypt the eval set to the enclave, publish the rules, and open a session."""
    from cotune.sdk.client import SessionOptions

    with friendly_errors():
        client = participant(chain, deployment, storage, key)
        gate_rules = GateRules.from_dict(json.loads(rules.read_text())) if rules else GateRules()
        options = SessionOptions(
            enclave_id=enclave_id,
            quorum=quorum,
            max_contributors=max_contributors,
            submit_window=submit_window,
            training_window=training_window,
            min_stake=min_stake,
            reward_pool=reward,
            allow_list=tuple(allow),
            rules=gate_rules,
            spec=SessionSpec(hyperparams=LoraHyperparams(epochs=epochs)),
            pinned_measurement=bytes.fromhex(measurement.removeprefix("0x"))
            if measurement
            else None,
        )
        session_id = client.open_session(eval_set, options)
    if as_json:
        print_json({"session_id": session_id, "rules_hash": "0x" + gate_rules.hash().hex()})
    else:
        console.print(f"opened session [bold]{session_id}[/]")


@app.command("status")
def status(
    session_id: int = typer.Argument(..., help="Session id."),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """The session's state, your contribution, and what you can claim."""
    with friendly_errors():
        client = participant(chain, deployment, storage, key)
        info = client.status(session_id)
    if as_json:
        print_json(info)
        return
    for name, value in info.items():
        if name != "you":
            console.print(f"{name:>18}: {value}", highlight=False)
    for name, value in info["you"].items():
        console.print(f"{'you.' + name:>18}: {value}", highlight=False)


@app.command("cancel")
def cancel(
    session_id: int = typer.Argument(..., help="Session id."),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Cancel an open session (owner); stakes and the pool become claimable."""
    with friendly_errors():
        tx = participant(chain, deployment, storage, key).cancel(session_id)
    if as_json:
        print_json({"session_id": session_id, "tx": tx.tx_hash, "gas": tx.gas_used})
    else:
        console.print(f"cancelled session {session_id} ({tx.tx_hash})")


@app.command("claim")
def claim(
    session_id: int = typer.Argument(..., help="Session id."),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Withdraw your stake, reward or refund from a settled session."""
    with friendly_errors():
        amount = participant(chain, deployment, storage, key).claim(session_id)
    if as_json:
        print_json({"session_id": session_id, "claimed_wei": amount})
    else:
        console.print(f"claimed {amount} wei from session {session_id}")
