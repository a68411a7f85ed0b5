"""Gated dataset downloads against a plain static file on uvicorn, and the redactor's speed.

Publishes one artifact (``--size-mib``, default 256) into a serving root, then starts two
uvicorn servers in child processes on loopback: cotune's gated dataset server (token
check, signed-log lookup, Range-capable streaming) and a bare Starlette ``FileResponse``
of the same file. The parent downloads from each in turn, ``--rounds`` times,
alternating so both see the same machine load, and keeps each side's best round. The
redactor runs over a generated JSONL corpus with personal data in one line in four.
Last line: JSON with gated_mb_s, plain_mb_s, ratio (gated over plain) and redact_mb_s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CHUNK = 1 << 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(kind: str, root: Path, port: int, artifact: Path) -> None:
    """Child process: run one of the two servers until killed."""
    import uvicorn

    if kind == "gated":
        from cotune.dataset.server import create_dataset_app
        from cotune.dataset.tokens import TokenStore

        app = create_dataset_app(root, TokenStore(root / "tokens.json"))
    else:
        from starlette.applications import Starlette
        from starlette.responses import FileResponse
        from starlette.routing import Route

        async def static(_request: object) -> FileResponse:
            return FileResponse(artifact)

        app = Starlette(routes=[Route("/file", static)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _start(kind: str, root: Path, artifact: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [sys.executable, __file__, "--serve", kind, str(root), str(port), str(artifact)]
    proc = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the {kind} server did not start")


def _download(url: str, headers: dict[str, str], expected: int) -> float:
    """Seconds to fetch ``url`` whole, reading (and discarding) 1 MiB at a time."""
    start = time.perf_counter()
    received = 0
    with httpx.stream("GET", url, headers=headers, timeout=60) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(CHUNK):
            received += len(chunk)
    seconds = time.perf_counter() - start
    if received != expected:
        raise RuntimeError(f"{url}: got {received} bytes, expected {expected}")
    return seconds


def _publish(work: Path, size_mib: int) -> tuple[Path, Path, str, int]:
    """A one-version bundle of ~size_mib, published; returns root, artifact, token, size."""
    from eth_account import Account

    from cotune.dataset.bundle import init_bundle
    from cotune.dataset.server import artifact_path, publish_version
    from cotune.dataset.tokens import TokenScope, TokenStore
    from cotune.dataset.versions import VERSION_LOG_NAME, VersionLog

    rng = random.Random(0)
    words = [f"word{i}" for i in range(500)]
    source = work / "data.jsonl"
    with source.open("w") as handle:
        while handle.tell() < size_mib * (1 << 20):
            text = " ".join(rng.choices(words, k=60))
            handle.write(json.dumps({"text": text}) + "\n")
    publisher = Account.create()
    bundle_dir, root = work / "bundle", work / "serve"
    bundle = init_bundle(
        bundle_dir, source, dataset_id="bench", name="bench", created_by=publisher.address
    )
    head = VersionLog.open(bundle_dir / VERSION_LOG_NAME).append(bundle, publisher)
    publish_version(root, bundle_dir)
    token = TokenStore(root / "tokens.json").issue("bench", TokenScope.up_to(1))
    artifact = artifact_path(root, head.entry.artifact_sha256)
    return root, artifact, token, artifact.stat().st_size


def _redact_mb_s(size_mib: int) -> float:
    from cotune.dataset.redact import Redactor

    rng = random.Random(1)
    lines = []
    size = 0
    while size < size_mib * (1 << 20):
        text = " ".join(rng.choices(["the", "patient", "reported", "mild", "pain", "today"], k=30))
        if rng.random() < 0.25:
            who = rng.randrange(10_000)
            text += (
                f" contact p{who}@clinic.example or +1 415 555 {who:04d} from 10.0.{who % 255}.7"
            )
        line = json.dumps({"text": text}) + "\n"
        lines.append(line)
        size += len(line)
    data = "".join(lines).encode()
    Redactor().redact_jsonl(data[: data.index(b"\n", 1 << 16) + 1])  # warm the patterns
    start = time.perf_counter()
    Redactor().redact_jsonl(data)
    return len(data) / 1e6 / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="artifact size (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="downloads per server (default 3)")
    parser.add_argument(
        "--redact-mib", type=int, default=16, help="redactor corpus size (default 16)"
    )
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, root, port, artifact = args.serve
        _serve(kind, Path(root), int(port), Path(artifact))
        return
    with tempfile.TemporaryDirectory(prefix="cotune-bench-dataset-") as scratch:
        root, artifact, token, size = _publish(Path(scratch), args.size_mib)
        gated, gated_url = _start("gated", root, artifact)
        plain, plain_url = _start("plain", root, artifact)
        try:
            best = {"gated": float("inf"), "plain": float("inf")}
            for _ in range(args.rounds):
                best["gated"] = min(
                    best["gated"],
                    _download(
                        f"{gated_url}/versions/1/artifact",
                        {"Authorization": f"Bearer {token}"},
                        size,
                    ),
                )
                best["plain"] = min(best["plain"], _download(f"{plain_url}/file", {}, size))
        finally:
            for proc in (gated, plain):
                proc.terminate()
                proc.wait(timeout=10)
    mb = size / 1e6
    gated_mb_s, plain_mb_s = mb / best["gated"], mb / best["plain"]
    result = {
        "size_mib": round(size / (1 << 20), 1),
        "gated_mb_s": round(gated_mb_s, 1),
        "plain_mb_s": round(plain_mb_s, 1),
        "ratio": round(gated_mb_s / plain_mb_s, 3),
        "redact_mb_s": round(_redact_mb_s(args.redact_mib), 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
