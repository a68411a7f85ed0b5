"""Gas used by each Coordinator, ModelNFT and DatasetMarket operation, on a real EVM.

Gas is deterministic, so one run is enough; ``finalize`` is measured with 3, 10 and 30
accepted contributors and reported with its cost per extra contributor, and in its worst
case: ``MAX_CONTRIBUTORS`` accepted, each with an ML-KEM-768 + X25519 key (the longest
sealed model key), a weight with no zero byte and a holder with no token yet. Last line: a
JSON object ``{"createSession": …, "submit": …, "submit_mlkem": …, "close": …,
"slashWithProof": …, "claim": …, "iTransferFrom": …, "finalize": {"3": …, "10": …, "30": …},
"finalize_per_contributor": …, "finalize_worst": {"contributors": …, "sealed_key_bytes": …,
"estimate": …, "gas_limit": …, "gas_used": …, "tx_bytes": …}, "market": {"list": …, "buy": …,
"withdraw": …}, "goals": {…}}``. Goals: ``submit <= 120000`` (an X25519 key); finalize grows
<= 120000 per contributor; the worst finalize's gas limit (estimate times the client's
margin) under EIP-7825's 2^24 and its transaction within geth's 128 KiB.
"""

from __future__ import annotations

import argparse
import json
import os

from eth_account import Account
from eth_account.signers.local import LocalAccount

from cotune.chain import (
    MAX_CONTRIBUTORS,
    Chain,
    Contracts,
    RejectionCertificate,
    SessionParams,
    connect,
    dataset_key,
    deploy_all,
)
from cotune.chain.clients.base import ContractClient
from cotune.chain.transactions import GAS_MARGIN
from cotune.crypto.hpke import HpkePrivateKey, HpkeSuite, seal

STAKE = 10**15
HPKE_KEY = b"\x00\x20" + bytes(range(32))  # an X25519 key: 34 bytes
SEALED_KEY = bytes(range(120))  # an HPKE-sealed 32-byte model key is about this long
EIP7825_TX_GAS_CAP = 2**24
TX_SIZE_LIMIT = 128 * 1024
"""geth's ``txMaxSize``: the largest transaction its pool accepts."""
HEAVIEST_WEIGHT = 2**48 - 1


def _gas(client: ContractClient) -> int:
    assert client.last_tx is not None
    return client.last_tx.gas_used


def _session(
    chain: Chain, admin: Contracts, enclave: LocalAccount, accepted: int
) -> dict[str, int]:
    """Run one session with ``accepted`` accepted contributors and one rejected; return gas."""
    contributors = [Account.create() for _ in range(accepted + 1)]
    for who in contributors:
        chain.fund(who.address, 10**18)
    measurement = admin.registry.get(1).measurement
    now = chain.timestamp()
    params = SessionParams(
        enclave_id=1,
        measurement=measurement,
        quorum=accepted + 1,
        max_contributors=accepted + 2,
        submit_deadline=now + 600,
        training_deadline=now + 6000,
        min_stake=STAKE,
    )
    session_id = admin.coordinator.create_session(params, reward_pool=10**16)
    gas = {"createSession": _gas(admin.coordinator)}
    submits = [
        admin.coordinator.as_account(who).submit(session_id, os.urandom(32), HPKE_KEY, stake=STAKE)
        for who in contributors
    ]
    gas["submit"] = max(r.gas_used for r in submits)
    chain.advance_time(601)
    gas["close"] = admin.coordinator.close(session_id).gas_used
    as_enclave = admin.as_account(enclave)
    winners = contributors[:accepted]
    gas["finalize"] = as_enclave.coordinator.finalize(
        session_id,
        os.urandom(32),
        os.urandom(32),
        [w.address for w in winners],
        [1000 + i for i in range(accepted)],
        [SEALED_KEY] * accepted,
    ).gas_used
    loser = contributors[-1]
    cert = RejectionCertificate(
        session_id,
        loser.address,
        admin.coordinator.contribution(session_id, loser.address).ciphertext_hash,
        2,
        -1234,
        os.urandom(32),
    )
    signature = as_enclave.coordinator.sign_rejection(enclave, cert)
    gas["slashWithProof"] = admin.coordinator.slash_with_proof(cert, signature).gas_used
    first = admin.coordinator.as_account(winners[0])
    first.claim(session_id)
    gas["claim"] = _gas(first)
    token_id = admin.model_nft.token_id_for(session_id, 0)
    receiver = Account.create().address
    proof = admin.model_nft.sign_reseal(
        enclave,
        token_id=token_id,
        sender=winners[0].address,
        receiver=receiver,
        sealed_key=SEALED_KEY,
    )
    gas["iTransferFrom"] = (
        admin.model_nft.as_account(winners[0])
        .i_transfer_from(winners[0].address, receiver, token_id, SEALED_KEY, proof)
        .gas_used
    )
    return gas


def _worst_finalize(chain: Chain, admin: Contracts, enclave: LocalAccount) -> dict[str, int]:
    """The largest finalize a session can need: MAX_CONTRIBUTORS accepted, ML-KEM keys."""
    n = MAX_CONTRIBUTORS
    now = chain.timestamp()
    params = SessionParams(
        enclave_id=1,
        measurement=admin.registry.get(1).measurement,
        quorum=n,
        max_contributors=n,
        submit_deadline=now + 600,
        training_deadline=now + 6000,
    )
    session_id = admin.coordinator.create_session(params)
    holders = [Account.create() for _ in range(n)]
    keys = [HpkePrivateKey.generate(HpkeSuite.MLKEM768_X25519).public_key() for _ in holders]
    submit_gas = 0
    for holder, key in zip(holders, keys, strict=True):
        chain.fund(holder.address, 10**18)
        result = admin.coordinator.as_account(holder).submit(
            session_id, os.urandom(32), key.to_bytes(), stake=0
        )
        submit_gas = max(submit_gas, result.gas_used)
    sealed = [seal(os.urandom(32), key, b"cotune model key") for key in keys]
    args = (
        session_id,
        os.urandom(32),
        os.urandom(32),
        [h.address for h in holders],
        [HEAVIEST_WEIGHT] * n,
        sealed,
    )
    as_enclave = admin.coordinator.as_account(enclave)
    call = as_enclave.contract.functions.finalize(*args)
    estimate = call.estimate_gas({"from": enclave.address})
    gas_limit = int(estimate * GAS_MARGIN)
    nonce = chain.w3.eth.get_transaction_count(enclave.address)
    tx = call.build_transaction({"from": enclave.address, "gas": gas_limit, "nonce": nonce})
    return {
        "contributors": n,
        "sealed_key_bytes": len(sealed[0]),
        "estimate": estimate,
        "gas_limit": gas_limit,
        "gas_used": as_enclave.finalize(*args).gas_used,
        "tx_bytes": len(enclave.sign_transaction(tx).raw_transaction),
        "submit_mlkem": submit_gas,
    }


def _market(chain: Chain, admin: Contracts) -> dict[str, int]:
    """Gas of listing a dataset version, buying it and withdrawing the proceeds."""
    seller = admin.market.as_account(chain.dev_accounts[1])
    buyer = admin.market.as_account(chain.dev_accounts[2])
    gas = {"list": seller.list_version("clinic-notes", 1, os.urandom(32), STAKE).gas_used}
    buyer.buy(dataset_key(seller.account_address, "clinic-notes"), 1, STAKE)
    gas["buy"] = _gas(buyer)
    seller.withdraw()
    gas["withdraw"] = _gas(seller)
    return gas


def main() -> None:
    """Measure and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", default="embedded", help="embedded or an RPC URL (anvil)")
    args = parser.parse_args()
    chain = connect(args.chain)
    deployer = chain.dev_accounts[0]
    deployment = deploy_all(chain, deployer)
    admin = Contracts.at(chain, deployment, deployer)
    enclave = Account.create()
    measurement = os.urandom(32)
    evidence = admin.verifier.attest(deployer, enclave.address, HPKE_KEY, measurement)
    admin.registry.register(
        enclave.address, HPKE_KEY, measurement, deployment.dev_verifier, evidence
    )
    chain.fund(enclave.address, 10**19)

    runs = {n: _session(chain, admin, enclave, n) for n in (3, 10, 30)}
    base = runs[3]
    finalize = {str(n): gas["finalize"] for n, gas in runs.items()}
    per_contributor = (runs[30]["finalize"] - runs[3]["finalize"]) / 27
    worst = _worst_finalize(chain, admin, enclave)
    result = {name: base[name] for name in ("createSession", "submit")}
    result["submit_mlkem"] = worst.pop("submit_mlkem")
    result |= {name: base[name] for name in ("close", "slashWithProof")}
    result |= {"claim": base["claim"], "iTransferFrom": base["iTransferFrom"]}
    result |= {"finalize": finalize, "finalize_per_contributor": round(per_contributor)}
    result["finalize_worst"] = worst
    result["market"] = _market(chain, admin)
    result["goals"] = {
        "submit_le_120000": base["submit"] <= 120_000,
        "finalize_per_contributor_le_120000": per_contributor <= 120_000,
        "finalize_worst_gas_limit_lt_2_24": worst["gas_limit"] < EIP7825_TX_GAS_CAP,
        "finalize_worst_tx_le_128_kib": worst["tx_bytes"] <= TX_SIZE_LIMIT,
    }
    result["chain"] = "embedded" if chain.is_embedded else args.chain
    print(json.dumps(result))


if __name__ == "__main__":
    main()
