"""Compiled contract artifacts shipped inside the package (no Node needed at run time)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

CONTRACT_NAMES = (
    "Coordinator",
    "DatasetMarket",
    "DevAttestationVerifier",
    "EnclaveRegistry",
    "ModelNFT",
)


@dataclass(frozen=True)
class Artifact:
    """ABI and bytecode of one contract as the pinned solc produced them."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_hashes: dict[str, str]


@cache
def load_artifact(name: str) -> Artifact:
    """Load the committed artifact of contract ``name`` (one of ``CONTRACT_NAMES``)."""
    if name not in CONTRACT_NAMES:
        raise KeyError(f"no artifact for {name!r}; known: {', '.join(CONTRACT_NAMES)}")
    text = (
        resources.files("cotune.chain").joinpath("artifacts").joinpath(f"{name}.json").read_text()
    )
    raw = json.loads(text)
    return Artifact(
        name=raw["contractName"],
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
        compiler_version=raw["compiler"]["version"],
        source_hashes=raw["sourceHashes"],
    )
