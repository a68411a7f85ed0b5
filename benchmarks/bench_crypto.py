"""Streaming encryption throughput against one-shot in-memory AES-256-GCM, in one run.

Encrypts then decrypts a file streamed disk to disk (in a child process, so its
peak RSS is measured alone), and times one-shot AES-256-GCM over the same bytes
in memory. Last line: a JSON object with encrypt_mb_s, decrypt_mb_s,
raw_aesgcm_mb_s, ratio (slower of encrypt/decrypt over raw) and peak_rss_mib.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _stream(size_mib: int, work: Path) -> dict[str, float]:
    from cotune.crypto import HpkePrivateKey, decrypt_file, encrypt_file

    source = work / "plain.bin"
    with source.open("wb") as handle:
        for _ in range(size_mib):
            handle.write(os.urandom(1 << 20))
    key = HpkePrivateKey.generate()
    start = time.perf_counter()
    encrypt_file(source, work / "cipher.ctun", key.public_key(), b"bench")
    encrypt_s = time.perf_counter() - start
    start = time.perf_counter()
    decrypt_file(work / "cipher.ctun", work / "out.bin", key, b"bench")
    decrypt_s = time.perf_counter() - start
    mb = size_mib * (1 << 20) / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"encrypt_mb_s": mb / encrypt_s, "decrypt_mb_s": mb / decrypt_s, "peak_rss_mib": peak}


def _raw(path: Path) -> float:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = path.read_bytes()
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    aead.encrypt(os.urandom(12), data[: 1 << 20], None)
    start = time.perf_counter()
    aead.encrypt(os.urandom(12), data, None)
    return len(data) / 1e6 / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1 GiB)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_stream(args.size_mib, args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="cotune-bench-", dir=".") as tmp:
        out = subprocess.run(
            [sys.executable, __file__, "--size-mib", str(args.size_mib), "--child", tmp],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        result["raw_aesgcm_mb_s"] = _raw(Path(tmp) / "plain.bin")
    result["ratio"] = (
        min(result["encrypt_mb_s"], result["decrypt_mb_s"]) / result["raw_aesgcm_mb_s"]
    )
    result["size_mib"] = args.size_mib
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))


if __name__ == "__main__":
    main()
