"""``cotune submit`` and ``cotune download``: a contributor's two commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cotune.cli.output import (
    JsonOption,
    byte_progress,
    console,
    fail,
    friendly_errors,
    print_json,
)
from cotune.cli.participant import (
    ChainOption,
    DeploymentOption,
    KeyOption,
    StorageOption,
    participant,
)
from cotune.cli.training_options import load_files
from cotune.crypto.stream import DEFAULT_CHUNK_SIZE, ciphertext_length

if TYPE_CHECKING:
    from cotune.dataset.provenance import DatasetClaim


def submit(
    session_id: int = typer.Argument(..., help="Session id."),
    data: Path | None = typer.Argument(
        None,
        exists=True,
        dir_okay=False,
        help="Your JSONL dataset [default with --dataset BUNDLE@HEAD: the bundle's artifact].",
    ),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="The data is this signed dataset version: BUNDLE_DIR@VERSION or URL@VERSION. "
        "The claim travels encrypted; the enclave checks it and records it in cotune.json.",
    ),
    stake: int | None = typer.Option(None, "--stake", help="Stake in wei [default: the minimum]."),
    measurement: str | None = typer.Option(
        None,
        "--measurement",
        help="Refuse an enclave not running this code (hex, from `cotune enclave measurement`).",
    ),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Validate, verify the enclave, encrypt to it, upload and commit with a stake.

    Nothing is uploaded or staked unless the data validates, the attestation holds,
    and the session accepts you (open, before its deadline, allow-list, first submit).
    """
    pinned = bytes.fromhex(measurement.removeprefix("0x")) if measurement else None
    from cotune.dataset.provenance import SALT_BYTES, resolve_dataset, wrap_submission

    claim = None
    if dataset is not None:
        with friendly_errors():
            claim, artifact = resolve_dataset(dataset)
        data = data or artifact
    if data is None:
        fail(
            "give the JSONL file to submit"
            + (f" (--dataset {dataset} is not a bundle's head version)" if dataset else "")
        )
    load_files([data], "nothing was encrypted, uploaded or staked")
    with friendly_errors():
        client = participant(chain, deployment, storage, key)
        # The envelope (dataset claim, commitment salt) is encrypted too.
        header = len(wrap_submission(b"", [claim] if claim else [], salt=bytes(SALT_BYTES)))
        size = data.stat().st_size + header
        estimate = ciphertext_length(size, DEFAULT_CHUNK_SIZE, 1024)
        with (
            byte_progress("encrypt", size, enabled=not as_json) as encrypted,
            byte_progress("upload", estimate, enabled=not as_json) as uploaded,
        ):
            result = client.submit(
                session_id,
                data,
                stake=stake,
                pinned_measurement=pinned,
                dataset=claim,
                progress=encrypted,
                upload_progress=uploaded,
            )
    payload = {
        "session_id": session_id,
        "ciphertext_hash": "0x" + result.ciphertext_hash.hex(),
        "bytes": result.size,
        "examples": result.examples,
        "dataset_commitment": result.commitment,
        "tx": result.tx.tx_hash,
        "gas": result.tx.gas_used,
        "dataset": None if claim is None else _claim_name(claim),
        "attestation": result.enclave.kind,
        "warning": result.enclave.warning,
    }
    if as_json:
        print_json(payload)
    else:
        if result.enclave.warning:
            console.print(
                f"[yellow]enclave {result.enclave.record.enclave_id}: {result.enclave.warning}[/]"
            )
        console.print(
            f"submitted {result.examples} examples to session {session_id}: "
            f"ciphertext 0x{result.ciphertext_hash.hex()[:16]}…, gas {result.tx.gas_used}"
            + (f", as {_claim_name(claim)}" if claim else "")
        )


def _claim_name(claim: DatasetClaim) -> str:
    entry = claim.signed.entry
    return f"{entry.dataset_id} v{entry.version} by {entry.publisher}"


def download(
    session_id: int = typer.Argument(..., help="Session id."),
    out: Path = typer.Argument(..., help="Directory to create with the PEFT adapter."),
    chain: str = ChainOption,
    deployment: Path | None = DeploymentOption,
    storage: str | None = StorageOption,
    key: str = KeyOption,
    as_json: bool = JsonOption,
) -> None:
    """Unseal your model key, fetch and verify the adapter, decrypt it into OUT."""
    with friendly_errors():
        client = participant(chain, deployment, storage, key)
        size = client.model_size(session_id)
        with byte_progress("download", size, enabled=not as_json) as advance:
            path = client.download(session_id, out, progress=advance)
    files = sorted(p.name for p in path.iterdir())
    if as_json:
        print_json({"session_id": session_id, "path": str(path), "files": files})
    else:
        console.print(f"adapter of session {session_id} in {path}: {', '.join(files)}")
