"""The chain layer: contracts, compiled artifacts, typed clients, embedded chain, devnet.

``connect("embedded")`` gives an in-process EVM; ``connect("http://…")`` any JSON-RPC
node. ``deploy_all`` deploys the Coordinator, EnclaveRegistry, DevAttestationVerifier,
ModelNFT and DatasetMarket; ``Contracts.at`` gives typed clients of a deployment.
"""

from cotune.chain.clients.coordinator import (
    ContributionInfo,
    ContributionStatus,
    CoordinatorClient,
    Payout,
    SessionInfo,
    SessionParams,
    SessionState,
)
from cotune.chain.clients.dataset_market import DatasetMarketClient, Listing, dataset_key
from cotune.chain.clients.model_nft import ModelNftClient, ModelRecord
from cotune.chain.clients.registry import DevVerifierClient, EnclaveRecord, EnclaveRegistryClient
from cotune.chain.connection import EMBEDDED, Chain, connect
from cotune.chain.deployment import Contracts, Deployment, deploy_all
from cotune.chain.errors import ChainError, DeploymentError, RevertError, TransactionError
from cotune.chain.limits import MAX_CONTRIBUTORS
from cotune.chain.statements import RejectionCertificate
from cotune.chain.transactions import TxResult
from cotune.chain.watcher import Cursor, EventWatcher

__all__ = [
    "EMBEDDED",
    "MAX_CONTRIBUTORS",
    "Chain",
    "ChainError",
    "Contracts",
    "ContributionInfo",
    "ContributionStatus",
    "CoordinatorClient",
    "Cursor",
    "DatasetMarketClient",
    "Deployment",
    "DeploymentError",
    "DevVerifierClient",
    "EnclaveRecord",
    "EnclaveRegistryClient",
    "EventWatcher",
    "Listing",
    "ModelNftClient",
    "ModelRecord",
    "Payout",
    "RejectionCertificate",
    "RevertError",
    "SessionInfo",
    "SessionParams",
    "SessionState",
    "TransactionError",
    "TxResult",
    "connect",
    "dataset_key",
    "deploy_all",
]
