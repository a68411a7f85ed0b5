"""``cotune demo``: until the end-to-end session exists, the crypto + storage round trip.

A contributor encrypts a generated JSONL dataset to an enclave key with the
context bound to (chain id, contract, session, contributor), uploads the
ciphertext to a content-addressed store, and the enclave fetches, verifies and
decrypts it. The demo then shows the failures the design promises: the same
ciphertext replayed under another session does not open, and a blob corrupted
at rest is refused.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cotune.cli.output import JsonOption, byte_progress, console, err_console, print_json
from cotune.common.atomic import atomic_writer
from cotune.crypto.errors import ContextMismatchError
from cotune.crypto.hpke import HpkePrivateKey, HpkeSuite
from cotune.crypto.identity import Identity
from cotune.crypto.stream import decrypt_stream_to_path, encrypt_file
from cotune.storage.errors import BlobIntegrityError
from cotune.storage.local import LocalStore

_TOPICS = ("triage", "dosage", "imaging", "follow-up", "consent", "allergy", "billing")


def write_demo_dataset(path: Path, size_bytes: int) -> int:
    """Write a deterministic chat-format JSONL file of about ``size_bytes``; returns lines."""
    lines = 0
    written = 0
    with atomic_writer(path) as handle:
        while written < size_bytes:
            topic = _TOPICS[lines % len(_TOPICS)]
            record = {
                "messages": [
                    {"role": "user", "content": f"Case {lines}: what is the {topic} protocol?"},
                    {
                        "role": "assistant",
                        "content": f"For case {lines}, follow the {topic} checklist step "
                        f"{lines % 13 + 1} and record the outcome.",
                    },
                ]
            }
            line = (json.dumps(record) + "\n").encode()
            handle.write(line)
            written += len(line)
            lines += 1
    return lines


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _context(chain_id: int, session_id: int, contributor: str) -> bytes:
    contract = "0x" + "c0" * 20
    return (
        f"cotune/v1|chain={chain_id}|coordinator={contract}|session={session_id}|"
        f"contributor={contributor}".encode()
    )


@dataclass
class _Check:
    name: str
    ok: bool
    detail: str


def _timed(stages: dict[str, float], name: str, action: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = action()
    stages[name] = round(time.perf_counter() - start, 4)
    return result


def demo(
    size_mib: float = typer.Option(
        16.0, "--size-mib", min=0, help="Size of the generated dataset."
    ),
    suite: HpkeSuite = typer.Option(
        HpkeSuite.X25519, "--suite", help="HPKE suite of the enclave key."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Run the crypto + storage round trip on a generated dataset (session demo: later)."""
    if not as_json:
        console.print(
            "[bold]cotune demo[/]: crypto + storage round trip on a generated file. "
            "The end-to-end multi-party session demo is not built yet."
        )
    stages: dict[str, float] = {}
    checks: list[_Check] = []
    with tempfile.TemporaryDirectory(prefix="cotune-demo-") as tmp:
        work = Path(tmp)
        dataset = work / "dataset.jsonl"
        lines = _timed(
            stages, "generate", lambda: write_demo_dataset(dataset, int(size_mib * 2**20))
        )
        size = dataset.stat().st_size
        contributor = Identity.generate()
        enclave_key = HpkePrivateKey.generate(suite)
        info = _context(31337, 1, contributor.address)
        store = LocalStore(work / "store")
        encrypted = work / "dataset.ctun"
        with byte_progress("encrypt", size, enabled=not as_json) as advance:
            _timed(
                stages,
                "encrypt",
                lambda: encrypt_file(
                    dataset, encrypted, enclave_key.public_key(), info, progress=advance
                ),
            )
        ref = _timed(stages, "upload", lambda: store.put_file(encrypted))
        decrypted = work / "received.jsonl"
        with (
            store.open(ref) as blob,
            byte_progress("decrypt", size, enabled=not as_json) as advance,
        ):
            _timed(
                stages,
                "download+decrypt",
                lambda: decrypt_stream_to_path(
                    blob, decrypted, enclave_key, info, progress=advance
                ),
            )
        same = _sha256(dataset) == _sha256(decrypted)
        checks.append(
            _Check("round trip", same, "decrypted bytes equal the original" if same else "MISMATCH")
        )

        replay_info = _context(31337, 2, contributor.address)
        try:
            with store.open(ref) as blob:
                decrypt_stream_to_path(blob, work / "replay.jsonl", enclave_key, replay_info)
            checks.append(
                _Check("replay into session 2", False, "ciphertext opened in another session")
            )
        except ContextMismatchError:
            checks.append(_Check("replay into session 2", True, "refused: ContextMismatchError"))

        blob_path = store.path_of(ref.cid)
        corrupted = bytearray(blob_path.read_bytes())
        corrupted[len(corrupted) // 2] ^= 0x01
        blob_path.write_bytes(bytes(corrupted))
        try:
            store.verify(ref)
            checks.append(_Check("bit flip at rest", False, "corruption was not detected"))
        except BlobIntegrityError:
            checks.append(_Check("bit flip at rest", True, "refused: BlobIntegrityError"))
        leftovers = [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
        checks.append(
            _Check("no partial files", not leftovers, ", ".join(leftovers) or "none left")
        )

    ok = all(check.ok for check in checks)
    if as_json:
        print_json(
            {
                "ok": ok,
                "mode": "crypto+storage round trip",
                "suite": suite.value,
                "dataset": {"bytes": size, "lines": lines},
                "blob": str(ref),
                "seconds": stages,
                "checks": {check.name: check.ok for check in checks},
            }
        )
    else:
        _print_report(size, lines, ref.cid, stages, checks)
    if not ok:
        raise typer.Exit(1)


def _print_report(
    size: int, lines: int, cid: str, stages: dict[str, float], checks: list[_Check]
) -> None:
    mib = size / 2**20
    timing = Table(title=f"{lines} examples, {mib:.1f} MiB, blob sha256:{cid[:16]}…")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    timing.add_column("MiB/s", justify="right")
    for name, seconds in stages.items():
        rate = f"{mib / seconds:.0f}" if seconds > 0 and name != "generate" else ""
        timing.add_row(name, f"{seconds:.3f}", rate)
    console.print(timing)
    result = Table(title="checks")
    result.add_column("check")
    result.add_column("result")
    result.add_column("detail")
    for check in checks:
        result.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAILED[/]", check.detail)
    console.print(result)
    if all(check.ok for check in checks):
        console.print("[green]all checks passed[/]")
    else:
        err_console.print("[red]some checks failed[/]")
