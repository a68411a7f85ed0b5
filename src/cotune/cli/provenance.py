"""``cotune provenance``: prove which session and which dataset versions an adapter came from."""

from __future__ import annotations

from pathlib import Path

import typer

from cotune.cli.output import JsonOption, console, friendly_errors, print_json
from cotune.cli.participant import (
    ChainOption,
    DeploymentOption,
    StorageOption,
    open_chain,
    open_storage,
)


def provenance(
    adapter_dir: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="An adapter directory from `cotune download`."
    ),
    offline: bool = typer.Option(
        False, "--offline", help="Check only the publishers' signatures in cotune.json."
    ),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    as_json: bool = JsonOption,
) -> None:
    """Print and verify where an adapter came from, link by link.

    The chain: model tokens → session → accepted contributions → dataset versions →
    publisher signatures.

    Online (the default) it reads the session, its model tokens and its contributions
    from the chain, and the public report the chain commits to from storage, and checks
    that this directory's cotune.json and files are that session's model. Every dataset
    claim the enclave recorded must be signed by its publisher and be the data trained
    on. Exits 1 when any link fails.
    """
    from cotune.sdk.provenance import verify_provenance

    with friendly_errors():
        online = None
        if not offline:
            rpc, record = open_chain(chain, deployment)
            online = (rpc, record, open_storage(storage))
        report = verify_provenance(adapter_dir, online)
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(f"[bold]{adapter_dir}[/]: session {report.session_id}")
        for token, holder in report.tokens:
            console.print(f"  model token {token:#x} held by {holder}", highlight=False)
        for item in report.datasets:
            console.print(
                f"  {item['contributor']} contributed {item['dataset_id']} v{item['version']} "
                f"(manifest {item['manifest_hash'][:18]}…) published by {item['publisher']}",
                highlight=False,
            )
        if not report.datasets:
            console.print("  no contributor claimed a published dataset")
        for check in report.checks:
            mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
            console.print(f"  {mark} {check.link}: {check.detail}", highlight=False)
        if offline:
            console.print("  [yellow]offline: the chain and the session report were not checked[/]")
    if not report.ok:
        raise typer.Exit(1)
