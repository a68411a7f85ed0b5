"""The largest finalize a session can need fits in one transaction (item: finalize gas).

A session takes at most ``MAX_CONTRIBUTORS``; the worst finalize accepts every one of
them, each with an ML-KEM-768 + X25519 key (the longest sealed model key: an 11-byte
header, 1120 bytes of encapsulation, the 32-byte key and a 16-byte tag), a weight with
no zero byte, and a holder that has no token yet. Its gas estimate times the client's
margin (what ``Transactor`` sends as the gas limit) must stay under EIP-7825's cap of
2^24 gas per transaction, and the signed transaction under the 128 KiB that geth-based
nodes accept into their pools. Gas is deterministic: this is no timing assertion.
"""

from __future__ import annotations

import os

from chain_fixtures import Enclave, session_params
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cotune.chain import MAX_CONTRIBUTORS, Chain, Contracts, SessionState
from cotune.chain.transactions import GAS_MARGIN
from cotune.crypto.hpke import HpkePrivateKey, HpkeSuite, seal

EIP7825_TX_GAS_CAP = 2**24
TX_SIZE_LIMIT = 128 * 1024
"""geth's ``txMaxSize``: the largest transaction its pool accepts (and most L2 nodes')."""
SEALED_KEY_SIZE = 11 + HpkeSuite.MLKEM768_X25519.enc_size + 32 + 16
HEAVIEST_WEIGHT = 2**48 - 1
"""uint48 with every byte non-zero: the dearest weight in calldata."""


def test_max_contributors_mirrors_the_contract(contracts: Contracts) -> None:
    assert contracts.coordinator.contract.functions.MAX_CONTRIBUTORS().call() == MAX_CONTRIBUTORS


def test_worst_case_finalize_fits_in_one_transaction(
    chain: Chain, contracts: Contracts, enclave: Enclave, deployer: LocalAccount
) -> None:
    n = MAX_CONTRIBUTORS
    coordinator = contracts.coordinator
    session_id = coordinator.create_session(
        session_params(chain, enclave, quorum=n, max_contributors=n, min_stake=0)
    )
    holders = [Account.create() for _ in range(n)]
    keys = [HpkePrivateKey.generate(HpkeSuite.MLKEM768_X25519).public_key() for _ in holders]
    for holder, key in zip(holders, keys, strict=True):
        chain.fund(holder.address, 10**18, payer=deployer)
        coordinator.as_account(holder).submit(session_id, os.urandom(32), key.to_bytes(), stake=0)
    assert coordinator.session(session_id).state is SessionState.TRAINING
    sealed = [seal(os.urandom(32), key, b"cotune model key") for key in keys]
    assert {len(s) for s in sealed} == {SEALED_KEY_SIZE} == {1179}

    call = coordinator.as_account(enclave.account).contract.functions.finalize(
        session_id,
        os.urandom(32),
        os.urandom(32),
        [h.address for h in holders],
        [HEAVIEST_WEIGHT] * n,
        sealed,
    )
    sender = enclave.account.address
    estimate = call.estimate_gas({"from": sender})
    gas_limit = int(estimate * GAS_MARGIN)
    assert gas_limit < EIP7825_TX_GAS_CAP, f"{n} contributors need a {gas_limit} gas limit"
    tx = call.build_transaction(
        {"from": sender, "gas": gas_limit, "nonce": chain.w3.eth.get_transaction_count(sender)}
    )
    size = len(enclave.account.sign_transaction(tx).raw_transaction)
    assert size <= TX_SIZE_LIMIT, f"{n} contributors make a {size}-byte finalize"

    result = coordinator.as_account(enclave.account).finalize(
        session_id,
        os.urandom(32),
        os.urandom(32),
        [h.address for h in holders],
        [HEAVIEST_WEIGHT] * n,
        sealed,
    )
    assert result.gas_used <= estimate
    assert coordinator.session(session_id).accepted_count == n
    assert contracts.model_nft.owner_of(contracts.model_nft.token_id_for(session_id, n - 1)) == (
        holders[-1].address
    )
