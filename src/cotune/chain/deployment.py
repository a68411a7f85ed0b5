"""``deploy_all``: the five contracts wired together, and the deployment record saved as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, is_checksum_address, to_checksum_address

from cotune.chain.artifacts import load_artifact
from cotune.chain.clients.coordinator import CoordinatorClient
from cotune.chain.clients.dataset_market import DatasetMarketClient
from cotune.chain.clients.model_nft import ModelNftClient
from cotune.chain.clients.registry import DevVerifierClient, EnclaveRegistryClient
from cotune.chain.connection import Chain
from cotune.chain.errors import DeploymentError
from cotune.common.atomic import write_bytes_atomic

DEFAULT_SLASH_WINDOW = 7 * 24 * 3600
"""Seconds after finalize during which rejected contributors can be slashed."""
RECORD_VERSION = 3
"""Bumped whenever the contracts change: an older record names contracts this release
cannot talk to (``cotune devnet up`` redeploys over it)."""


@dataclass(frozen=True)
class Deployment:
    """Where cotune's contracts live on one chain."""

    chain_id: int
    block_number: int
    deployer: str
    dev_authority: str
    slash_window: int
    coordinator: str
    enclave_registry: str
    dev_verifier: str
    model_nft: str
    dataset_market: str
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        """The record as pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "deployment record") -> Deployment:
        """Parse a record; ``DeploymentError`` names the missing or wrong field."""
        if raw.get("version") != RECORD_VERSION:
            raise DeploymentError(
                f"{source}: version {raw.get('version')!r} is not {RECORD_VERSION} "
                "(a record from another cotune release: deploy again)"
            )
        values: dict[str, Any] = {}
        for name, kind in (
            ("chain_id", int),
            ("block_number", int),
            ("slash_window", int),
            ("deployer", str),
            ("dev_authority", str),
            ("coordinator", str),
            ("enclave_registry", str),
            ("dev_verifier", str),
            ("model_nft", str),
            ("dataset_market", str),
        ):
            value = raw.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DeploymentError(
                    f"{source}: field {name!r} must be {kind.__name__}, got {value!r}"
                )
            values[name] = _address(value, name, source) if kind is str else value
        return cls(**values)

    def save(self, path: Path) -> None:
        """Write the record atomically."""
        write_bytes_atomic(path, self.to_json().encode(), overwrite=True)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Read a record written by ``save``."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DeploymentError(f"no deployment record at {path}") from exc
        except json.JSONDecodeError as exc:
            raise DeploymentError(f"{path}: not JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise DeploymentError(f"{path}: expected a JSON object")
        return cls.from_dict(raw, str(path))

    def check(self, chain: Chain) -> None:
        """Raise ``DeploymentError`` unless this record describes ``chain``'s contracts."""
        if chain.chain_id != self.chain_id:
            raise DeploymentError(
                f"deployment is for chain {self.chain_id}, connected to chain {chain.chain_id}"
            )
        for name, address in (
            ("Coordinator", self.coordinator),
            ("EnclaveRegistry", self.enclave_registry),
            ("DevAttestationVerifier", self.dev_verifier),
            ("ModelNFT", self.model_nft),
            ("DatasetMarket", self.dataset_market),
        ):
            code = bytes(chain.w3.eth.get_code(address))  # type: ignore[arg-type]
            if not code:
                raise DeploymentError(f"no {name} code at {address} on chain {self.chain_id}")
            expected = load_artifact(name).deployed_bytecode
            if not _same_runtime(code, bytes.fromhex(expected[2:])):
                raise DeploymentError(f"{name} at {address} is not the code this cotune ships")


def _address(value: Any, name: str, source: str) -> str:
    """A checksummed address, refusing malformed ones and mixed case with a bad checksum."""
    text = str(value)
    if not is_address(text) or (text != text.lower() and not is_checksum_address(text)):
        raise DeploymentError(f"{source}: field {name!r} must be an address, got {value!r}")
    return to_checksum_address(text)


def _same_runtime(deployed: bytes, artifact: bytes) -> bool:
    """Compare runtime code ignoring immutables (zeros in the artifact) and metadata."""
    if len(deployed) != len(artifact):
        return False
    return all(a == b or b == 0 for a, b in zip(deployed, artifact, strict=True))


@dataclass(frozen=True)
class Contracts:
    """Clients of all five contracts, acting as one account."""

    coordinator: CoordinatorClient
    registry: EnclaveRegistryClient
    verifier: DevVerifierClient
    model_nft: ModelNftClient
    market: DatasetMarketClient

    @classmethod
    def at(
        cls, chain: Chain, deployment: Deployment, account: LocalAccount | None = None
    ) -> Contracts:
        """Clients of a deployment (read-only without ``account``)."""
        return cls(
            CoordinatorClient(chain, deployment.coordinator, account),
            EnclaveRegistryClient(chain, deployment.enclave_registry, account),
            DevVerifierClient(chain, deployment.dev_verifier, account),
            ModelNftClient(chain, deployment.model_nft, account),
            DatasetMarketClient(chain, deployment.dataset_market, account),
        )

    def as_account(self, account: LocalAccount) -> Contracts:
        """The same contracts, sending as ``account``."""
        return Contracts(
            self.coordinator.as_account(account),
            self.registry.as_account(account),
            self.verifier.as_account(account),
            self.model_nft.as_account(account),
            self.market.as_account(account),
        )


def deploy_all(
    chain: Chain,
    deployer: LocalAccount,
    *,
    dev_authority: str | None = None,
    slash_window: int = DEFAULT_SLASH_WINDOW,
) -> Deployment:
    """Deploy and wire the verifier, registry, model token and Coordinator, and the market.

    The deployer becomes the registry admin; ``dev_authority`` (default: the deployer)
    is the key whose statements the dev verifier accepts.
    """
    authority = to_checksum_address(dev_authority or deployer.address)
    start = chain.block_number()
    verifier, _ = DevVerifierClient.deploy(chain, deployer, authority)
    registry, _ = EnclaveRegistryClient.deploy(chain, deployer, deployer.address)
    nft, _ = ModelNftClient.deploy(chain, deployer, registry.address)
    coordinator, _ = CoordinatorClient.deploy(
        chain, deployer, registry.address, nft.address, slash_window
    )
    market, _ = DatasetMarketClient.deploy(chain, deployer)
    nft.set_minter(coordinator.address)
    registry.set_verifier(verifier.address, True)
    return Deployment(
        chain_id=chain.chain_id,
        block_number=start + 1,
        deployer=str(deployer.address),
        dev_authority=authority,
        slash_window=slash_window,
        coordinator=coordinator.address,
        enclave_registry=registry.address,
        dev_verifier=verifier.address,
        model_nft=nft.address,
        dataset_market=market.address,
    )
