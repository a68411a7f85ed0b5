"""Gas used by each Coordinator, ModelNFT and DatasetMarket operation, on a real EVM.

Gas is deterministic, so one run is enough; ``finalize`` is measured with 3, 10 and 30
accepted contributors and reported with its cost per extra contributor. Last line: a JSON
object ``{"createSession": …, "submit": …, "close": …, "slashWithProof": …, "claim": …,
"iTransferFrom": …, "finalize": {"3": …, "10": …, "30": …}, "finalize_per_contributor": …,
"market": {"list": …, "buy": …, "withdraw": …}, "goals": {…}}``. Goals: ``submit <= 120000``;
finalize grows <= 120000 per contributor.
"""

from __future__ import annotations

import argparse
import json
import os

from eth_account import Account
from eth_account.signers.local import LocalAccount

from cotune.chain import (
    Chain,
    Contracts,
    RejectionCertificate,
    SessionParams,
    connect,
    dataset_key,
    deploy_all,
)
from cotune.chain.clients.base import ContractClient

STAKE = 10**15
HPKE_KEY = b"\x00\x20" + bytes(range(32))  # an X25519 key: 34 bytes
SEALED_KEY = bytes(range(120))  # an HPKE-sealed 32-byte model key is about this long


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
    result = {name: base[name] for name in ("createSession", "submit", "close", "slashWithProof")}
    result |= {"claim": base["claim"], "iTransferFrom": base["iTransferFrom"]}
    result |= {"finalize": finalize, "finalize_per_contributor": round(per_contributor)}
    result["market"] = _market(chain, admin)
    result["goals"] = {
        "submit_le_120000": base["submit"] <= 120_000,
        "finalize_per_contributor_le_120000": per_contributor <= 120_000,
    }
    result["chain"] = "embedded" if chain.is_embedded else args.chain
    print(json.dumps(result))


if __name__ == "__main__":
    main()
