"""ModelNFT on both backends: minting through the Coordinator and access-carrying transfers.

Tokens are minted by ``Coordinator.finalize`` (one per accepted contributor, id
``(session_id << 32) | index``) with the model key sealed to each holder published in
``PublishedSealedKey``. Ownership moves only with ``iTransferFrom`` and the session
enclave's EIP-712 re-seal proof, which names the token, both parties, the new sealed
key and the token's transfer nonce, under a domain naming this chain and contract; and
only while the registry has not revoked that enclave.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import pytest
from chain_fixtures import Enclave, expect_revert
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cotune.chain import (
    Chain,
    Contracts,
    ModelNftClient,
    ModelRecord,
    RevertError,
    SessionParams,
    SessionState,
    TxResult,
)
from cotune.chain.events import (
    Approval,
    ApprovalForAll,
    ContributionAccepted,
    MinterSet,
    ModelRecorded,
    PublishedSealedKey,
    SessionFinalized,
    Transfer,
)
from cotune.chain.statements import RESEAL_TYPES, model_nft_domain, sign_reseal_statement
from cotune.crypto.eip712 import typed_data_digest

ZERO_ADDRESS = "0x" + "00" * 20
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
STAKE = 10**15


def send_as(
    chain: Chain, account: LocalAccount, nft: ModelNftClient, function: str, *args: Any
) -> TxResult:
    """Send any ModelNFT function (the client has no method for it) as ``account``."""
    bound = nft.contract.functions[function](*args)
    return chain.sender(account).send("ModelNFT", function, bound)


@dataclass(frozen=True)
class Minted:
    """A finalized session: two accepted holders with tokens, one rejected contributor."""

    nft: ModelNftClient
    enclave: LocalAccount
    session_id: int
    holders: list[LocalAccount]
    rejected: LocalAccount
    token_ids: list[int]
    sealed_keys: list[bytes]
    model_hash: bytes
    manifest_hash: bytes
    finalize: TxResult

    def reseal(
        self,
        token_id: int,
        sender: str,
        receiver: str,
        sealed_key: bytes,
        signer: LocalAccount | None = None,
    ) -> bytes:
        """A re-seal proof at the token's current nonce (by the enclave unless ``signer``)."""
        return self.nft.sign_reseal(
            signer or self.enclave,
            token_id=token_id,
            sender=sender,
            receiver=receiver,
            sealed_key=sealed_key,
        )

    def transfer(
        self, caller: LocalAccount, token_id: int, sender: str, receiver: str, key: bytes
    ) -> TxResult:
        """``caller`` moves a token with a fresh, valid proof."""
        proof = self.reseal(token_id, sender, receiver, key)
        return self.nft.as_account(caller).i_transfer_from(sender, receiver, token_id, key, proof)


@pytest.fixture
def minted(
    chain: Chain,
    contracts: Contracts,
    enclave: Enclave,
    contributors: list[LocalAccount],
) -> Minted:
    """Three contributors submit; the enclave accepts the first two (weights 3 and 1)."""
    now = chain.timestamp()
    params = SessionParams(
        enclave_id=enclave.enclave_id,
        measurement=enclave.measurement,
        quorum=2,
        max_contributors=3,
        submit_deadline=now + 1000,
        training_deadline=now + 5000,
        min_stake=STAKE,
    )
    session_id = contracts.coordinator.create_session(params)
    for i, who in enumerate(contributors[:3]):
        contracts.coordinator.as_account(who).submit(
            session_id, bytes([i + 1]) * 32, b"\x00\x20" + os.urandom(32), stake=STAKE
        )
    assert contracts.coordinator.session(session_id).state == SessionState.TRAINING
    holders = contributors[:2]
    sealed_keys = [b"sealed-0:" + os.urandom(40), b"sealed-1:" + os.urandom(40)]
    model_hash, manifest_hash = os.urandom(32), os.urandom(32)
    result = contracts.coordinator.as_account(enclave.account).finalize(
        session_id,
        model_hash,
        manifest_hash,
        [h.address for h in holders],
        [3, 1],
        sealed_keys,
    )
    return Minted(
        nft=contracts.model_nft,
        enclave=enclave.account,
        session_id=session_id,
        holders=holders,
        rejected=contributors[2],
        token_ids=[(session_id << 32) | i for i in range(2)],
        sealed_keys=sealed_keys,
        model_hash=model_hash,
        manifest_hash=manifest_hash,
        finalize=result,
    )


# ------------------------------------------------------------------------ minter


def test_set_minter_once_by_deployer(
    chain: Chain, contracts: Contracts, deployer: LocalAccount
) -> None:
    nft, deployed = ModelNftClient.deploy(chain, deployer, contracts.registry.address)
    assert nft.contract.functions.registry().call() == contracts.registry.address
    assert deployed.events == []
    assert nft.minter() == ZERO_ADDRESS
    outsider, minter = chain.dev_accounts[6], chain.dev_accounts[7]
    assert (
        expect_revert("NotDeployer", lambda: nft.as_account(outsider).set_minter(outsider.address))
        == {}
    )
    result = nft.set_minter(minter.address)
    event: MinterSet = result.first(MinterSet)
    assert result.events == [event]
    assert (event.minter, event.address) == (minter.address, nft.address)
    assert nft.minter() == minter.address
    assert expect_revert("MinterAlreadySet", lambda: nft.set_minter(outsider.address)) == {}
    expect_revert("NotDeployer", lambda: nft.as_account(minter).set_minter(minter.address))
    assert nft.minter() == minter.address


def test_mint_session_only_by_minter(
    chain: Chain, contracts: Contracts, deployer: LocalAccount
) -> None:
    nft, _ = ModelNftClient.deploy(chain, deployer, contracts.registry.address)
    minter, a, b = chain.dev_accounts[7], chain.dev_accounts[8], chain.dev_accounts[9]
    nft.set_minter(minter.address)
    session_id, enclave_id, model, manifest = 7, 3, os.urandom(32), os.urandom(32)
    keys = [b"ka", b"kb"]

    def mint(caller: LocalAccount, holders: list[str], sealed: list[bytes]) -> TxResult:
        return send_as(
            chain,
            caller,
            nft,
            "mintSession",
            session_id,
            enclave_id,
            model,
            manifest,
            holders,
            sealed,
        )

    holders: list[str] = [a.address, b.address]
    assert expect_revert("NotMinter", lambda: mint(deployer, holders, keys)) == {
        "caller": deployer.address
    }
    assert expect_revert("LengthMismatch", lambda: mint(minter, holders, keys[:1])) == {}
    result = mint(minter, holders, keys)
    assert [type(e) for e in result.events] == [
        ModelRecorded,
        Transfer,
        PublishedSealedKey,
        Transfer,
        PublishedSealedKey,
    ]
    recorded: ModelRecorded = result.first(ModelRecorded)
    assert (recorded.session_id, recorded.model_hash, recorded.manifest_hash) == (
        session_id,
        model,
        manifest,
    )
    assert recorded.enclave_id == enclave_id
    token_ids = [nft.token_id_for(session_id, i) for i in range(2)]
    assert [(t.from_, t.to, t.token_id) for t in result.all(Transfer)] == [
        (ZERO_ADDRESS, a.address, token_ids[0]),
        (ZERO_ADDRESS, b.address, token_ids[1]),
    ]
    assert [(p.token_id, p.holder, p.sealed_key) for p in result.all(PublishedSealedKey)] == [
        (token_ids[0], a.address, keys[0]),
        (token_ids[1], b.address, keys[1]),
    ]
    assert nft.session_model(session_id) == ModelRecord(model, manifest, enclave_id, 2)
    assert expect_revert("ModelAlreadyRecorded", lambda: mint(minter, holders, keys)) == {
        "sessionId": session_id
    }


# ---------------------------------------------------------------------- finalize


def test_finalize_mints_one_token_per_accepted_contributor(
    chain: Chain, contracts: Contracts, deployer: LocalAccount, enclave: Enclave, minted: Minted
) -> None:
    nft, sid = minted.nft, minted.session_id
    assert nft.minter() == contracts.coordinator.address
    assert minted.token_ids == [nft.token_id_for(sid, 0), nft.token_id_for(sid, 1)]
    for index, token_id in enumerate(minted.token_ids):
        assert nft.contract.functions.tokenIdFor(sid, index).call() == token_id
        assert nft.contract.functions.sessionOf(token_id).call() == sid
        assert nft.owner_of(token_id) == minted.holders[index].address
        assert nft.balance_of(minted.holders[index].address) == 1
        assert nft.transfer_nonce(token_id) == 0
        assert nft.token_model(token_id) == ModelRecord(
            minted.model_hash, minted.manifest_hash, enclave.enclave_id, 2
        )
        [published] = nft.sealed_key_events(token_id)
        assert (published.token_id, published.holder, published.sealed_key) == (
            token_id,
            minted.holders[index].address,
            minted.sealed_keys[index],
        )
        assert published.block_number == minted.finalize.block_number
    assert nft.balance_of(minted.rejected.address) == 0
    assert nft.session_model(sid) == nft.token_model(minted.token_ids[0])
    assert nft.session_model(sid + 1) == ModelRecord(bytes(32), bytes(32), 0, 0)

    # the finalize transaction, in log order: the Coordinator's events, then the NFT's
    events = minted.finalize.events
    assert [type(e) for e in events] == [
        ContributionAccepted,
        ContributionAccepted,
        SessionFinalized,
        ModelRecorded,
        Transfer,
        PublishedSealedKey,
        Transfer,
        PublishedSealedKey,
    ]
    assert [e.log_index for e in events] == sorted(e.log_index for e in events)
    accepted = minted.finalize.all(ContributionAccepted)
    assert [(e.contributor, e.weight, e.token_id) for e in accepted] == [
        (minted.holders[0].address, 3, minted.token_ids[0]),
        (minted.holders[1].address, 1, minted.token_ids[1]),
    ]
    recorded: ModelRecorded = minted.finalize.first(ModelRecorded)
    assert (recorded.address, recorded.session_id) == (nft.address, sid)
    assert (recorded.model_hash, recorded.manifest_hash, recorded.enclave_id) == (
        minted.model_hash,
        minted.manifest_hash,
        enclave.enclave_id,
    )
    transfers = minted.finalize.all(Transfer)
    assert [(t.from_, t.to, t.token_id, t.address) for t in transfers] == [
        (ZERO_ADDRESS, h.address, t, nft.address)
        for h, t in zip(minted.holders, minted.token_ids, strict=True)
    ]
    published_keys = minted.finalize.all(PublishedSealedKey)
    assert [(p.token_id, p.holder, p.sealed_key) for p in published_keys] == [
        (t, h.address, k)
        for t, h, k in zip(minted.token_ids, minted.holders, minted.sealed_keys, strict=True)
    ]

    # no third token, and nobody but the Coordinator mints
    third = nft.token_id_for(sid, 2)
    assert expect_revert("ERC721NonexistentToken", lambda: nft.owner_of(third)) == {
        "tokenId": third
    }
    assert expect_revert("ERC721NonexistentToken", lambda: nft.token_model(third)) == {
        "tokenId": third
    }
    args = expect_revert(
        "NotMinter",
        lambda: send_as(
            chain,
            deployer,
            nft,
            "mintSession",
            sid + 1,
            enclave.enclave_id,
            bytes(32),
            bytes(32),
            [deployer.address],
            [b"k"],
        ),
    )
    assert args == {"caller": deployer.address}


# --------------------------------------------------------------------- transfers


def test_plain_transfers_revert(chain: Chain, minted: Minted) -> None:
    holder, receiver = minted.holders[0], chain.dev_accounts[6]
    token_id = minted.token_ids[0]
    nft = minted.nft
    args = (holder.address, receiver.address, token_id)
    for bound in (
        nft.contract.functions.transferFrom(*args),
        nft.contract.get_function_by_signature("safeTransferFrom(address,address,uint256)")(*args),
        nft.contract.get_function_by_signature("safeTransferFrom(address,address,uint256,bytes)")(
            *args, b"data"
        ),
    ):
        with pytest.raises(RevertError) as info:
            chain.sender(holder).send("ModelNFT", bound.fn_name, bound)
        assert info.value.error == "UseITransferFrom"
        assert "iTransferFrom" in str(info.value)
    assert nft.owner_of(token_id) == holder.address
    assert nft.transfer_nonce(token_id) == 0


def test_i_transfer_from_by_owner_and_no_replay(chain: Chain, minted: Minted) -> None:
    nft, token_id = minted.nft, minted.token_ids[0]
    holder, receiver = minted.holders[0], chain.dev_accounts[6]
    key_for_receiver = b"resealed-to-receiver:" + os.urandom(16)
    proof = minted.reseal(token_id, holder.address, receiver.address, key_for_receiver)

    result = nft.as_account(holder).i_transfer_from(
        holder.address, receiver.address, token_id, key_for_receiver, proof
    )
    assert [type(e) for e in result.events] == [Transfer, PublishedSealedKey]
    moved: Transfer = result.first(Transfer)
    assert (moved.from_, moved.to, moved.token_id) == (holder.address, receiver.address, token_id)
    published: PublishedSealedKey = result.first(PublishedSealedKey)
    assert (published.token_id, published.holder, published.sealed_key) == (
        token_id,
        receiver.address,
        key_for_receiver,
    )
    assert nft.owner_of(token_id) == receiver.address
    assert nft.balance_of(holder.address) == 0
    assert nft.balance_of(receiver.address) == 1
    assert nft.transfer_nonce(token_id) == 1

    # the same proof cannot be used twice: the nonce it signed has moved on
    args = expect_revert(
        "InvalidResealProof",
        lambda: nft.as_account(receiver).i_transfer_from(
            holder.address, receiver.address, token_id, key_for_receiver, proof
        ),
    )
    assert args["expected"] == minted.enclave.address
    assert args["recovered"] != minted.enclave.address

    # back to the holder, then the holder replays the first proof: refused
    key_back = b"resealed-to-holder:" + os.urandom(16)
    minted.transfer(receiver, token_id, receiver.address, holder.address, key_back)
    assert nft.owner_of(token_id) == holder.address
    assert nft.transfer_nonce(token_id) == 2
    args = expect_revert(
        "InvalidResealProof",
        lambda: nft.as_account(holder).i_transfer_from(
            holder.address, receiver.address, token_id, key_for_receiver, proof
        ),
    )
    assert args["expected"] == minted.enclave.address
    assert nft.owner_of(token_id) == holder.address

    history = nft.sealed_key_events(token_id)
    assert [(e.holder, e.sealed_key) for e in history] == [
        (holder.address, minted.sealed_keys[0]),
        (receiver.address, key_for_receiver),
        (holder.address, key_back),
    ]
    assert [e.position for e in history] == sorted(e.position for e in history)
    assert history[-1].position > history[0].position
    # the other token is untouched
    assert nft.transfer_nonce(minted.token_ids[1]) == 0
    assert len(nft.sealed_key_events(minted.token_ids[1])) == 1
    assert nft.sealed_key_events(token_id, from_block=result.block_number + 1)[0].sealed_key == (
        key_back
    )


def test_i_transfer_from_by_approved_operators(chain: Chain, minted: Minted) -> None:
    nft = minted.nft
    operator, receiver = chain.dev_accounts[7], chain.dev_accounts[8]
    first, second = minted.token_ids
    holder_a, holder_b = minted.holders

    approval: Approval = send_as(chain, holder_a, nft, "approve", operator.address, first).first(
        Approval
    )
    assert (approval.owner, approval.approved, approval.token_id) == (
        holder_a.address,
        operator.address,
        first,
    )
    # approval for one token does not cover another
    assert expect_revert(
        "ERC721InsufficientApproval",
        lambda: minted.transfer(operator, second, holder_b.address, receiver.address, b"k"),
    ) == {"operator": operator.address, "tokenId": second}

    key = b"for-receiver"
    result = minted.transfer(operator, first, holder_a.address, receiver.address, key)
    assert result.first(Transfer).to == receiver.address
    assert result.first(PublishedSealedKey).holder == receiver.address
    assert nft.owner_of(first) == receiver.address
    assert nft.contract.functions.getApproved(first).call() == ZERO_ADDRESS  # cleared

    everything: ApprovalForAll = send_as(
        chain, holder_b, nft, "setApprovalForAll", operator.address, True
    ).first(ApprovalForAll)
    assert (everything.owner, everything.operator, everything.approved) == (
        holder_b.address,
        operator.address,
        True,
    )
    minted.transfer(operator, second, holder_b.address, receiver.address, b"second")
    assert nft.owner_of(second) == receiver.address
    assert nft.balance_of(receiver.address) == 2
    assert [nft.transfer_nonce(t) for t in minted.token_ids] == [1, 1]


# ----------------------------------------------------------------------- failures


def _malleate_high_s(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])


def test_invalid_reseal_proofs(chain: Chain, contracts: Contracts, minted: Minted) -> None:
    nft, token_id, other_token = minted.nft, minted.token_ids[0], minted.token_ids[1]
    holder, receiver, third = minted.holders[0], chain.dev_accounts[6], chain.dev_accounts[7]
    key = b"the-right-key"
    stranger = Account.create()

    def reseal_in(domain_chain: int, domain_contract: str) -> bytes:
        return sign_reseal_statement(
            minted.enclave,
            model_nft_domain(domain_chain, domain_contract),
            token_id=token_id,
            sender=holder.address,
            receiver=receiver.address,
            sealed_key=key,
            transfer_nonce=0,
        )

    cases: dict[str, tuple[int, bytes, str | None]] = {
        # case: (token, proof, recovered when it is known)
        "signed by another key": (
            token_id,
            minted.reseal(token_id, holder.address, receiver.address, key, stranger),
            stranger.address,
        ),
        "proof for another receiver": (
            token_id,
            minted.reseal(token_id, holder.address, third.address, key),
            None,
        ),
        "proof for other key bytes": (
            token_id,
            minted.reseal(token_id, holder.address, receiver.address, b"another-key"),
            None,
        ),
        "proof for another token": (
            token_id,
            minted.reseal(other_token, holder.address, receiver.address, key),
            None,
        ),
        "proof for another sender": (
            token_id,
            minted.reseal(token_id, minted.holders[1].address, receiver.address, key),
            None,
        ),
        "proof for another contract": (
            token_id,
            reseal_in(chain.chain_id, contracts.coordinator.address),
            None,
        ),
        "proof for another chain": (token_id, reseal_in(chain.chain_id + 1, nft.address), None),
        "proof with a future nonce": (
            token_id,
            sign_reseal_statement(
                minted.enclave,
                nft.domain(),
                token_id=token_id,
                sender=holder.address,
                receiver=receiver.address,
                sealed_key=key,
                transfer_nonce=1,
            ),
            None,
        ),
        "high-s malleated proof": (
            token_id,
            _malleate_high_s(minted.reseal(token_id, holder.address, receiver.address, key)),
            ZERO_ADDRESS,
        ),
        "empty proof": (token_id, b"", ZERO_ADDRESS),
        "zero proof": (token_id, bytes(65), ZERO_ADDRESS),
    }
    for case, (token, proof, recovered) in cases.items():
        with pytest.raises(RevertError) as info:
            nft.as_account(holder).i_transfer_from(
                holder.address, receiver.address, token, key, proof
            )
        assert info.value.error == "InvalidResealProof", case
        args = info.value.args_by_name
        assert args["expected"] == minted.enclave.address, case
        assert args["recovered"] != minted.enclave.address, case
        if recovered is not None:
            assert args["recovered"] == recovered, case

    # a token of a session without a model: no enclave can vouch for it
    orphan = nft.token_id_for(minted.session_id + 1, 0)
    proof = minted.reseal(orphan, holder.address, receiver.address, key)
    args = expect_revert(
        "ERC721NonexistentToken",
        lambda: nft.as_account(holder).i_transfer_from(
            holder.address, receiver.address, orphan, key, proof
        ),
    )
    assert args == {"tokenId": orphan}

    assert nft.owner_of(token_id) == holder.address
    assert nft.transfer_nonce(token_id) == 0
    # and the right proof still works
    proof = minted.reseal(token_id, holder.address, receiver.address, key)
    nft.as_account(holder).i_transfer_from(holder.address, receiver.address, token_id, key, proof)
    assert nft.owner_of(token_id) == receiver.address


def test_i_transfer_from_input_and_ownership_errors(chain: Chain, minted: Minted) -> None:
    nft, token_id = minted.nft, minted.token_ids[0]
    holder, other_holder = minted.holders
    receiver = chain.dev_accounts[6]

    def attempt(caller: LocalAccount, sender: str, to: str, token: int, key: bytes) -> TxResult:
        proof = minted.reseal(token, sender, to, key)  # a genuine enclave proof
        return nft.as_account(caller).i_transfer_from(sender, to, token, key, proof)

    assert (
        expect_revert(
            "EmptySealedKey",
            lambda: attempt(holder, holder.address, receiver.address, token_id, b""),
        )
        == {}
    )
    assert expect_revert(
        "ERC721InvalidReceiver",
        lambda: attempt(holder, holder.address, ZERO_ADDRESS, token_id, b"k"),
    ) == {"receiver": ZERO_ADDRESS}
    assert expect_revert(
        "ERC721IncorrectOwner",
        lambda: attempt(holder, other_holder.address, receiver.address, token_id, b"k"),
    ) == {"sender": other_holder.address, "tokenId": token_id, "owner": holder.address}
    assert expect_revert(
        "ERC721InsufficientApproval",
        lambda: attempt(other_holder, holder.address, receiver.address, token_id, b"k"),
    ) == {"operator": other_holder.address, "tokenId": token_id}
    assert expect_revert(
        "ERC721InsufficientApproval",
        lambda: attempt(receiver, holder.address, receiver.address, token_id, b"k"),
    ) == {"operator": receiver.address, "tokenId": token_id}
    missing = nft.token_id_for(minted.session_id, 2)  # the rejected contributor's slot
    assert expect_revert(
        "ERC721NonexistentToken",
        lambda: attempt(holder, holder.address, receiver.address, missing, b"k"),
    ) == {"tokenId": missing}

    assert nft.owner_of(token_id) == holder.address
    assert nft.transfer_nonce(token_id) == 0
    assert len(nft.sealed_key_events(token_id)) == 1


def test_i_transfer_from_refuses_a_revoked_enclave(
    chain: Chain, contracts: Contracts, enclave: Enclave, minted: Minted
) -> None:
    nft, token_id = minted.nft, minted.token_ids[0]
    holder, receiver = minted.holders[0], chain.dev_accounts[6]
    key = b"resealed-by-a-revoked-enclave"
    proof = minted.reseal(token_id, holder.address, receiver.address, key)  # signed before

    contracts.registry.revoke(enclave.enclave_id)
    for fresh in (False, True):  # a proof from before the revocation, and one from after
        signed = minted.reseal(token_id, holder.address, receiver.address, key) if fresh else proof
        with pytest.raises(RevertError) as info:
            nft.as_account(holder).i_transfer_from(
                holder.address, receiver.address, token_id, key, signed
            )
        assert info.value.error == "EnclaveRevoked"
        assert info.value.args_by_name == {"enclaveId": enclave.enclave_id}
        assert str(info.value) == (
            f"ModelNFT.iTransferFrom: enclave {enclave.enclave_id} has been revoked"
        )
    assert nft.owner_of(token_id) == holder.address
    assert nft.transfer_nonce(token_id) == 0
    assert len(nft.sealed_key_events(token_id)) == 1


def test_reseal_digest_and_domain_agree_with_python(chain: Chain, minted: Minted) -> None:
    nft, token_id = minted.nft, minted.token_ids[1]
    holder, receiver = minted.holders[1], chain.dev_accounts[6]
    domain = nft.domain()
    _, name, version, chain_id, contract, _, _ = nft.contract.functions.eip712Domain().call()
    assert (name, version, chain_id, contract) == (
        domain.name,
        domain.version,
        chain.chain_id,
        nft.address,
    )
    assert domain == model_nft_domain(chain.chain_id, nft.address)
    key = os.urandom(77)
    for nonce in (0, 1):
        message = {
            "tokenId": token_id,
            "from": holder.address,
            "to": receiver.address,
            "sealedKeyHash": chain.w3.keccak(key),
            "transferNonce": nonce,
        }
        expected = typed_data_digest(domain, RESEAL_TYPES, "ResealStatement", message)
        on_chain = nft.contract.functions.resealDigest(
            token_id, holder.address, receiver.address, key
        ).call()
        assert bytes(on_chain) == expected
        other_chain = dataclasses.replace(domain, chain_id=chain.chain_id + 1)
        assert typed_data_digest(other_chain, RESEAL_TYPES, "ResealStatement", message) != expected
        if nonce == 0:
            minted.transfer(holder, token_id, holder.address, receiver.address, key)
            holder, receiver = receiver, holder
