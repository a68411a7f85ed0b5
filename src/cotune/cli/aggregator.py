"""``cotune aggregator``: run the enclave service, look at its sessions, recover one."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from cotune.aggregator.enclave import DEV_MODE_WARNING
from cotune.aggregator.limits import OperatorLimits
from cotune.aggregator.state import SqliteStateStore
from cotune.cli.output import JsonOption, console, fail, friendly_errors, print_json
from cotune.cli.participant import (
    ChainOption,
    DeploymentOption,
    StorageOption,
    dev_account,
    load_identity,
    open_chain,
    open_storage,
    operator_secret,
)
from cotune.common.serving import BackgroundServer, serve_in_background

if TYPE_CHECKING:  # the service (torch, FastAPI) loads only when a command needs it
    from cotune.aggregator.service import Aggregator

app = typer.Typer(help=f"The enclave aggregator service. {DEV_MODE_WARNING}.", no_args_is_help=True)

DataDirOption = typer.Option(
    Path("aggregator-data"), "--data-dir", help="State (SQLite), sealed enclave keys, cursor."
)


_LIMITS = OperatorLimits()
_MIB, _GIB = 1 << 20, 1 << 30


def _limits_help(what: str) -> str:
    return f"Cap on {what}."


def _aggregator(
    chain: str,
    deployment: Path | None,
    storage: str | None,
    data_dir: Path,
    limits: OperatorLimits | None = None,
) -> Aggregator:
    from cotune.aggregator.service import Aggregator, AggregatorConfig

    config = AggregatorConfig(  # local checks before the network
        data_dir, operator_secret(), limits=limits or OperatorLimits()
    )
    chain_, record = open_chain(chain, deployment)
    return Aggregator(chain_, record, open_storage(storage), config)


@app.command("run")
def run(
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    data_dir: Path = DataDirOption,
    operator_key: str | None = typer.Option(
        None,
        "--operator-key",
        help="Keystore that registers the enclave and funds its signer [default on a dev "
        "chain: its first dev account].",
    ),
    once: bool = typer.Option(False, "--once", help="Poll once, run what is ready, exit."),
    api_port: int = typer.Option(
        8780, "--api-port", min=0, help="Port of the HTTP API on --api-host (0: no API)."
    ),
    api_host: str = typer.Option("127.0.0.1", "--api-host", help="Address the API binds."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Torch CPU threads [default: torch's choice]."
    ),
    poll: float = typer.Option(1.0, "--poll", help="Seconds between polls."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per line: the enclave, then each log line."
    ),
    max_contributors: int = typer.Option(
        _LIMITS.max_contributors, "--max-contributors", min=1,
        help=_limits_help("submissions per session"),
    ),
    max_contribution_mib: int = typer.Option(
        _LIMITS.max_contribution_bytes // _MIB, "--max-contribution-mib", min=1,
        help=_limits_help("MiB per contribution a session's rules may allow"),
    ),
    max_session_gib: float = typer.Option(
        _LIMITS.max_session_bytes / _GIB, "--max-session-gib", min=0.001,
        help=_limits_help("GiB one session may make the enclave hold"),
    ),
    max_seq_len: int = typer.Option(
        _LIMITS.max_seq_len, "--max-seq-len", min=8, help=_limits_help("tokens per sequence")
    ),
    max_batch_size: int = typer.Option(
        _LIMITS.max_batch_size, "--max-batch-size", min=1, help=_limits_help("examples per step")
    ),
    max_rank: int = typer.Option(
        _LIMITS.max_rank, "--max-rank", min=1, help=_limits_help("LoRA rank (joint and probes)")
    ),
    max_eval_examples: int = typer.Option(
        _LIMITS.max_eval_examples, "--max-eval-examples", min=1,
        help=_limits_help("examples of an owner's eval set"),
    ),
    max_steps: int = typer.Option(
        _LIMITS.max_steps, "--max-steps", min=1, help=_limits_help("steps of the joint run")
    ),
    max_train_tokens: int = typer.Option(
        _LIMITS.max_train_tokens, "--max-train-tokens", min=1,
        help=_limits_help("tokens of the joint run, every epoch"),
    ),
    max_probe_tokens: int = typer.Option(
        _LIMITS.max_probe_tokens, "--max-probe-tokens", min=1,
        help=_limits_help("tokens of one contributor's gate probe"),
    ),
    max_session_minutes: float = typer.Option(
        (_LIMITS.max_session_seconds or 0) / 60, "--max-session-minutes", min=0.0,
        help="Cap on wall-clock minutes one session may run (0: until its training deadline).",
    ),
) -> None:  # fmt: skip
    """Register the enclave if needed, then run every session that reaches quorum.

    Needs COTUNE_ENCLAVE_SECRET (seals the enclave keys in the data dir). Stop with
    Ctrl-C or SIGTERM; a restart resumes every session from its last checkpoint.
    Sessions run one at a time, each within its deadline and the --max-* caps: a session
    whose worst case (from its committed spec and rules) is over a cap is refused before
    it runs, and one still running at --max-session-minutes is stopped.

    Example: `cotune aggregator run --data-dir agg/ --max-contributors 16 --max-steps 20000`
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    with friendly_errors():
        limits = OperatorLimits(
            max_contributors=max_contributors,
            max_contribution_bytes=max_contribution_mib * _MIB,
            max_session_bytes=int(max_session_gib * _GIB),
            max_seq_len=max_seq_len,
            max_batch_size=max_batch_size,
            max_rank=max_rank,
            max_eval_examples=max_eval_examples,
            max_steps=max_steps,
            max_train_tokens=max_train_tokens,
            max_probe_tokens=max_probe_tokens,
            max_session_seconds=60 * max_session_minutes if max_session_minutes else None,
        )
        service = _aggregator(chain, deployment, storage, data_dir, limits)
        operator = (
            load_identity(operator_key).account
            if operator_key
            else service.chain.dev_accounts[0]
            if service.chain.dev_accounts
            else None
        )
        authority = dev_account(service.chain, service.deployment.dev_authority)
        if operator is not None and authority is not None:
            service.register(authority, operator)  # reuses a live record; refuses revoked keys
        elif service.enclave_id is None:
            fail("the enclave is not registered and no dev authority key is available here")
        if as_json:
            print_json(
                {
                    "enclave_id": service.enclave_id,
                    "signer": service.keys.public.signer,
                    "measurement": "0x" + service.measurement.hex(),
                    "warning": DEV_MODE_WARNING,
                    "api": f"http://{api_host}:{api_port}" if api_port else None,
                    "limits": service.config.limits.to_dict(),
                    "swept_plaintext": service.swept_on_start,
                }
            )
        else:
            console.print(f"[yellow]{DEV_MODE_WARNING}[/]", soft_wrap=True)
            console.print(
                f"enclave {service.enclave_id}: signer {service.keys.public.signer}, "
                f"measurement 0x{service.measurement.hex()}",
                highlight=False,
                soft_wrap=True,
            )
            if api_port:
                console.print(f"HTTP API on http://{api_host}:{api_port} (/health, /sessions)")
        stop = threading.Event()

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        printer = threading.Thread(target=_print_logs, args=(service, stop, as_json), daemon=True)
        printer.start()
        server = _serve_api(service, api_host, api_port) if api_port else None
        while True:
            service.poll()
            if once or stop.wait(poll):
                break
        stop.set()
        printer.join()
        if server is not None:
            server.stop()


def _serve_api(service: Aggregator, host: str, port: int) -> BackgroundServer:
    """Serve the HTTP API in a background thread."""
    from cotune.aggregator.api import create_app

    return serve_in_background(create_app(service), host, port)


def _print_logs(service: Aggregator, stop: threading.Event, as_json: bool) -> None:
    """Echo every session's new log lines while the service works (sessions run long)."""
    seen: dict[int, int] = {}
    while True:
        stopping = stop.wait(0.3)
        for record in service.state.sessions():
            for line in service.state.logs(record.session_id, seen.get(record.session_id, 0)):
                if as_json:
                    print_json(
                        {"session_id": line.session_id, "at": line.at, "message": line.message}
                    )
                else:
                    console.print(
                        f"[dim]session {line.session_id}[/] {line.message}",
                        highlight=False,
                        soft_wrap=True,
                    )
                seen[record.session_id] = line.line_id
        if stopping:
            return


@app.command("status")
def status(data_dir: Path = DataDirOption, as_json: bool = JsonOption) -> None:
    """Every session the aggregator has seen: stage, attempts, error, timestamps."""
    database = data_dir / "state.sqlite3"
    if not database.exists():
        fail(f"no aggregator state in {data_dir}")
    records = SqliteStateStore(database).sessions()
    if as_json:
        print_json([r.to_dict() | {"result": None} for r in records])
        return
    table = Table(title=f"sessions in {data_dir}")
    for column in ("session", "stage", "attempts", "error"):
        table.add_column(column)
    for r in records:
        table.add_row(str(r.session_id), r.stage.value, str(r.attempts), r.error or "")
    console.print(table)


@app.command("recover")
def recover(
    session_id: int = typer.Argument(..., help="Session to retry."),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    data_dir: Path = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Retry a session stuck by an external fault, from its last checkpoint."""
    with friendly_errors():
        service = _aggregator(chain, deployment, storage, data_dir)
        stage = service.recover(session_id)
        record = service.state.get(session_id)
    error = record.error if record else None
    if as_json:
        print_json({"session_id": session_id, "stage": stage.value, "error": error})
    else:
        console.print(f"session {session_id}: {stage.value}" + (f" ({error})" if error else ""))
    if error:
        raise typer.Exit(1)
