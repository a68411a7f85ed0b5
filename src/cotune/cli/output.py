"""Shared CLI plumbing: consoles, ``--json`` output, progress bars and clean error exits."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cotune.chain.errors import ChainError
from cotune.common.errors import CotuneError
from cotune.crypto.errors import CryptoError
from cotune.storage.errors import StorageError

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(
    False, "--json", help="Print one JSON object for scripts instead of text."
)


def print_json(payload: Any) -> None:
    """Write ``payload`` as one JSON line on stdout."""
    sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
    sys.stdout.flush()  # a daemon's lines must reach a pipe as they happen


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the library's expected failures into one-line errors instead of tracebacks."""
    try:
        yield
    except (
        ChainError,
        CryptoError,
        StorageError,
        ValueError,
        OSError,
        LookupError,
        CotuneError,
    ) as exc:
        fail(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def byte_progress(
    label: str, total: int, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A transfer progress bar on stderr; yields the ``advance(nbytes)`` callback."""
    if not enabled or not err_console.is_terminal:
        yield lambda _n: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


@contextlib.contextmanager
def training_bars(
    *, enabled: bool = True, transient: bool = False
) -> Iterator[Callable[[str, int, int, float], None]]:
    """One progress bar per training run, on stderr.

    Yields ``on_step(label, step, total, loss)``; a new label starts a new bar.
    """
    if not enabled or not err_console.is_terminal:
        yield lambda _label, _step, _total, _loss: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=transient) as progress:
        tasks: dict[str, TaskID] = {}

        def on_step(label: str, step: int, total: int, loss: float) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total, loss=loss)
            progress.update(tasks[label], completed=step, total=total, loss=loss)

        yield on_step


@contextlib.contextmanager
def step_progress(
    label: str, *, enabled: bool = True
) -> Iterator[Callable[[int, int, float], None]]:
    """One training progress bar on stderr; yields the ``on_step(step, total, loss)`` callback."""
    with training_bars(enabled=enabled, transient=True) as on_step:
        yield lambda step, total, loss: on_step(label, step, total, loss)
