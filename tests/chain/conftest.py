"""Chain fixtures: every test that takes ``chain`` runs on the embedded EVM and on anvil.

Shared types and helpers live in ``chain_fixtures`` (import it by that name).

Anvil is the session's shared one (``anvil_url`` in the root conftest).
"""

from __future__ import annotations

import os

import pytest
from chain_fixtures import Enclave
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cotune.chain import Chain, Contracts, Deployment, connect, deploy_all

BACKENDS = ["embedded", "anvil"]


@pytest.fixture(params=BACKENDS)
def chain(request: pytest.FixtureRequest) -> Chain:
    """A chain with funded dev accounts: a fresh embedded EVM, or the shared anvil."""
    if request.param == "embedded":
        return connect("embedded")
    return connect(request.getfixturevalue("anvil_url"))


@pytest.fixture
def deployer(chain: Chain) -> LocalAccount:
    return chain.dev_accounts[0]


@pytest.fixture
def deployment(chain: Chain, deployer: LocalAccount) -> Deployment:
    """A fresh deployment of all five contracts (anvil: new addresses per test)."""
    return deploy_all(chain, deployer, slash_window=3600)


@pytest.fixture
def contracts(chain: Chain, deployment: Deployment, deployer: LocalAccount) -> Contracts:
    """Clients acting as the deployer (registry admin and dev authority)."""
    return Contracts.at(chain, deployment, deployer)


@pytest.fixture
def enclave(chain: Chain, contracts: Contracts, deployer: LocalAccount) -> Enclave:
    """A dev enclave registered through the dev verifier, funded to send transactions."""
    account = Account.create()
    hpke_key = b"\x00\x20" + os.urandom(32)
    measurement = os.urandom(32)
    evidence = contracts.verifier.attest(deployer, account.address, hpke_key, measurement)
    enclave_id = contracts.registry.register(
        account.address, hpke_key, measurement, contracts.verifier.address, evidence
    )
    chain.fund(account.address, 10**18)
    return Enclave(account, hpke_key, measurement, enclave_id)


@pytest.fixture
def contributors(chain: Chain) -> list[LocalAccount]:
    """Five dev accounts to submit from (the deployer, account 0, is the owner)."""
    return chain.dev_accounts[1:6]
