"""Compile ``contracts/*.sol`` with the pinned npm solc into ``src/cotune/chain/artifacts``.

``--check`` compiles into memory and fails when the committed artifacts differ, which
is how CI proves they were built from the sources beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "contracts"
ARTIFACTS = ROOT / "src" / "cotune" / "chain" / "artifacts"
DEPLOYABLE = (
    "Coordinator",
    "DatasetMarket",
    "DevAttestationVerifier",
    "EnclaveRegistry",
    "ModelNFT",
)
SETTINGS = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"]}
    },
}


def compile_sources() -> dict[str, str]:
    """Run solc on every contract source; return artifact file name -> JSON text."""
    sources = {
        f"contracts/{p.name}": {"content": p.read_text()} for p in sorted(SOURCES.glob("*.sol"))
    }
    request = json.dumps({"language": "Solidity", "sources": sources, "settings": SETTINGS})
    proc = subprocess.run(
        ["node", str(ROOT / "scripts" / "solc_compile.cjs")],
        input=request,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"solc failed (did you run `make node`?):\n{proc.stderr}")
    result = json.loads(proc.stdout)
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e["severity"] == "error"]
    for diagnostic in output.get("errors", []):
        # OpenZeppelin's safeTransferFrom is unreachable by design: ModelNFT disables transfers
        in_dependency = diagnostic.get("sourceLocation", {}).get("file", "").startswith("@")
        if diagnostic["severity"] == "error" or not in_dependency:
            print(diagnostic["formattedMessage"], file=sys.stderr)
    if errors:
        sys.exit("compilation failed")
    artifacts = {}
    for source_name, contracts in output["contracts"].items():
        for name, compiled in contracts.items():
            if name not in DEPLOYABLE:
                continue
            metadata = json.loads(compiled["metadata"])
            used = sorted(metadata["sources"])
            record = {
                "contractName": name,
                "sourceName": source_name,
                "compiler": {"version": result["version"], "settings": SETTINGS},
                "sourceHashes": {
                    path: "sha256:" + hashlib.sha256(_source_text(path).encode()).hexdigest()
                    for path in used
                },
                "abi": compiled["abi"],
                "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            }
            artifacts[f"{name}.json"] = json.dumps(record, indent=1, sort_keys=True) + "\n"
    missing = set(DEPLOYABLE) - {n.removesuffix(".json") for n in artifacts}
    if missing:
        sys.exit(f"no output for {sorted(missing)}")
    return artifacts


def _source_text(path: str) -> str:
    local = ROOT / path
    return (local if local.exists() else ROOT / "node_modules" / path).read_text()


def main() -> None:
    """Write the artifacts, or with ``--check`` compare them with the committed ones."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed artifacts differ")
    args = parser.parse_args()
    artifacts = compile_sources()
    if args.check:
        stale = [
            name
            for name, text in artifacts.items()
            if not (ARTIFACTS / name).exists() or (ARTIFACTS / name).read_text() != text
        ]
        extra = {p.name for p in ARTIFACTS.glob("*.json")} - set(artifacts)
        if stale or extra:
            names = sorted(stale) + sorted(extra)
            sys.exit(f"contract artifacts are stale: {names}; run `make contracts`")
        print(f"{len(artifacts)} contract artifacts match their sources")
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, text in artifacts.items():
        (ARTIFACTS / name).write_text(text)
    print(f"wrote {len(artifacts)} artifacts to {ARTIFACTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
