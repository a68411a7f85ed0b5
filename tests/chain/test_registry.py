"""EnclaveRegistry and DevAttestationVerifier on both backends: reverts, events, records.

Every revert path of the registry and the dev verifier is driven through the typed
clients and checked by its decoded custom error and arguments; every event is checked
field by field. The dev verifier's EIP-712 statements are bound to the chain id and
the verifier contract, so a statement signed for one deployment does not verify on
another, and the Python-side digest and recovery agree with the contract. Statements
expire and carry a nonce; the registry admits each evidence once, and a revoked
enclave's signer and HPKE key never again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import pytest
from chain_fixtures import Enclave, expect_revert
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from cotune.chain import (
    Chain,
    Contracts,
    DevVerifierClient,
    EnclaveRegistryClient,
    RevertError,
)
from cotune.chain.events import (
    EnclaveRegistered,
    EnclaveRevoked,
    Event,
    OwnershipTransferred,
    VerifierApproved,
    decode_logs,
)
from cotune.chain.statements import (
    ENCLAVE_STATEMENT_TYPES,
    DevEvidence,
    dev_verifier_domain,
    recover_enclave_statement,
    sign_enclave_statement,
)
from cotune.chain.transactions import guard_call
from cotune.crypto.eip712 import typed_data_digest
from cotune.crypto.errors import SignatureError

ZERO_ADDRESS = "0x" + "00" * 20
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def block_events(chain: Chain, address: str, block: int) -> list[Event]:
    """The cotune events ``address`` emitted in ``block``, decoded from the node's logs."""
    logs = chain.w3.eth.get_logs({"address": address, "fromBlock": block, "toBlock": block})  # type: ignore[typeddict-item]
    return decode_logs(logs)


def new_enclave_keys() -> tuple[LocalAccount, bytes, bytes]:
    """A fresh enclave signer, HPKE public key and measurement."""
    return Account.create(), b"\x00\x20" + os.urandom(32), os.urandom(32)


# --------------------------------------------------------------------- deployment


def test_registry_deploy_emits_ownership_transferred(chain: Chain, deployer: LocalAccount) -> None:
    admin = chain.dev_accounts[2]
    registry, result = EnclaveRegistryClient.deploy(chain, deployer, admin.address)
    [event] = result.all(OwnershipTransferred)
    assert event.previous_owner == ZERO_ADDRESS
    assert event.new_owner == admin.address
    assert event.address == registry.address
    assert event.block_number == result.block_number
    assert registry.admin() == admin.address
    assert registry.count() == 0
    # the deployer is not the admin: only ``admin`` may approve verifiers
    args = expect_revert(
        "OwnableUnauthorizedAccount", lambda: registry.set_verifier(deployer.address)
    )
    assert args == {"account": deployer.address}
    assert registry.as_account(admin).set_verifier(deployer.address).first(VerifierApproved)


def test_verifier_deploy_authority_and_kind(chain: Chain, deployer: LocalAccount) -> None:
    authority = Account.create()
    verifier, _ = DevVerifierClient.deploy(chain, deployer, authority.address)
    assert verifier.authority() == authority.address
    assert verifier.kind() == "dev"
    domain = verifier.domain()
    assert domain == dev_verifier_domain(chain.chain_id, verifier.address)
    # the contract's own EIP-5267 domain names this chain and this contract
    fields, name, version, chain_id, contract, salt, extensions = (
        verifier.contract.functions.eip712Domain().call()
    )
    assert bytes(fields) == b"\x0f"  # name, version, chainId, verifyingContract
    assert (name, version, chain_id, contract) == (
        domain.name,
        domain.version,
        chain.chain_id,
        verifier.address,
    )
    assert bytes(salt) == bytes(32)
    assert list(extensions) == []


def test_zero_authority_is_refused_at_deploy(chain: Chain, deployer: LocalAccount) -> None:
    before = chain.block_number()
    with pytest.raises(RevertError) as info:
        DevVerifierClient.deploy(chain, deployer, ZERO_ADDRESS)
    assert info.value.error == "ZeroAuthority"
    assert info.value.contract == "DevAttestationVerifier"
    assert info.value.function == "constructor"
    assert "the dev authority address is zero" in str(info.value)
    assert chain.block_number() == before  # refused at estimation: nothing was mined


# ---------------------------------------------------------------------- verifiers


def test_set_verifier_events_and_admin_only(
    chain: Chain, contracts: Contracts, deployer: LocalAccount
) -> None:
    registry = contracts.registry
    assert registry.is_verifier_approved(contracts.verifier.address)
    other, _ = DevVerifierClient.deploy(chain, deployer, deployer.address)
    assert not registry.is_verifier_approved(other.address)

    approved = registry.set_verifier(other.address, True)
    assert approved.events == [approved.first(VerifierApproved)]
    event: VerifierApproved = approved.first(VerifierApproved)
    assert (event.verifier, event.approved, event.address) == (
        other.address,
        True,
        registry.address,
    )
    assert registry.is_verifier_approved(other.address)

    withdrawn: VerifierApproved = registry.set_verifier(other.address, False).first(
        VerifierApproved
    )
    assert (withdrawn.verifier, withdrawn.approved) == (other.address, False)
    assert not registry.is_verifier_approved(other.address)

    outsider = chain.dev_accounts[6]
    args = expect_revert(
        "OwnableUnauthorizedAccount",
        lambda: registry.as_account(outsider).set_verifier(other.address, True),
    )
    assert args == {"account": outsider.address}
    assert not registry.is_verifier_approved(other.address)


def test_unapproved_verifier_cannot_admit(
    chain: Chain, contracts: Contracts, deployer: LocalAccount, enclave: Enclave
) -> None:
    registry = contracts.registry
    other, _ = DevVerifierClient.deploy(chain, deployer, deployer.address)
    signer, hpke_key, measurement = new_enclave_keys()
    evidence = other.attest(deployer, signer.address, hpke_key, measurement)
    assert other.verify(signer.address, hpke_key, measurement, evidence)  # valid, yet refused
    args = expect_revert(
        "VerifierNotApproved",
        lambda: registry.register(signer.address, hpke_key, measurement, other.address, evidence),
    )
    assert args == {"verifier": other.address}

    # withdrawing the dev verifier stops new admissions but keeps existing records
    registry.set_verifier(contracts.verifier.address, False)
    evidence = contracts.verifier.attest(deployer, signer.address, hpke_key, measurement)
    args = expect_revert(
        "VerifierNotApproved",
        lambda: registry.register(
            signer.address, hpke_key, measurement, contracts.verifier.address, evidence
        ),
    )
    assert args == {"verifier": contracts.verifier.address}
    kept = registry.get(enclave.enclave_id)
    assert kept.signer == enclave.account.address
    assert not kept.revoked
    assert registry.count() == 1


# ------------------------------------------------------------------- registration


def test_register_records_and_emits(
    chain: Chain, contracts: Contracts, deployer: LocalAccount
) -> None:
    registry, verifier = contracts.registry, contracts.verifier
    for expected_id in (1, 2):
        signer, hpke_key, measurement = new_enclave_keys()
        evidence = verifier.attest(deployer, signer.address, hpke_key, measurement)
        enclave_id = registry.register(
            signer.address, hpke_key, measurement, verifier.address, evidence
        )
        assert enclave_id == expected_id
        block = chain.block_number()
        [event] = block_events(chain, registry.address, block)
        assert isinstance(event, EnclaveRegistered)
        assert (
            event.enclave_id,
            event.signer,
            event.verifier,
            event.measurement,
            event.hpke_public_key,
        ) == (enclave_id, signer.address, verifier.address, measurement, hpke_key)

        record = registry.get(enclave_id)
        assert record.enclave_id == enclave_id
        assert record.signer == signer.address
        assert record.verifier == verifier.address
        assert record.registered_at == chain.w3.eth.get_block(block)["timestamp"]
        assert record.revoked is False
        assert record.measurement == measurement
        assert record.hpke_public_key == hpke_key
        assert record.evidence == evidence
    assert registry.count() == 2


def test_record_names_the_verifier_that_admitted_it(
    chain: Chain, contracts: Contracts, deployer: LocalAccount, enclave: Enclave
) -> None:
    registry = contracts.registry
    second_authority = Account.create()
    second, _ = DevVerifierClient.deploy(chain, deployer, second_authority.address)
    registry.set_verifier(second.address, True)
    signer, hpke_key, measurement = new_enclave_keys()
    evidence = second.attest(second_authority, signer.address, hpke_key, measurement)

    # the dev verifier does not accept the second authority's statement ...
    args = expect_revert(
        "AttestationRejected",
        lambda: registry.register(
            signer.address, hpke_key, measurement, contracts.verifier.address, evidence
        ),
    )
    assert args == {"verifier": contracts.verifier.address}
    # ... the second verifier does, and the record says so
    enclave_id = registry.register(signer.address, hpke_key, measurement, second.address, evidence)
    assert registry.get(enclave_id).verifier == second.address
    assert registry.get(enclave.enclave_id).verifier == contracts.verifier.address
    [event] = block_events(chain, registry.address, chain.block_number())
    assert isinstance(event, EnclaveRegistered)
    assert event.verifier == second.address


def test_attestation_rejected(contracts: Contracts, deployer: LocalAccount) -> None:
    registry, verifier = contracts.registry, contracts.verifier
    signer, hpke_key, measurement = new_enclave_keys()
    other_signer, other_key, other_measurement = new_enclave_keys()
    good = verifier.attest(deployer, signer.address, hpke_key, measurement)
    cases: dict[str, tuple[str, bytes, bytes, bytes]] = {
        "signed by a non-authority key": (
            signer.address,
            hpke_key,
            measurement,
            verifier.attest(Account.create(), signer.address, hpke_key, measurement),
        ),
        "statement for another measurement": (signer.address, hpke_key, other_measurement, good),
        "statement for another hpke key": (signer.address, other_key, measurement, good),
        "statement for another signer": (other_signer.address, hpke_key, measurement, good),
        "empty evidence": (signer.address, hpke_key, measurement, b""),
        "truncated evidence": (signer.address, hpke_key, measurement, good[:64]),
        "garbage evidence": (signer.address, hpke_key, measurement, b"\x01" * 65),
        "garbage evidence of the right length": (
            signer.address,
            hpke_key,
            measurement,
            b"\xff" * 8 + b"\x01" * 97,
        ),
        "a signature over another expiry": (
            signer.address,
            hpke_key,
            measurement,
            (2**64 - 1).to_bytes(8, "big") + good[8:],
        ),
        "a signature over another nonce": (
            signer.address,
            hpke_key,
            measurement,
            good[:8] + bytes(32) + good[40:],
        ),
        "a bare signature (no expiry, no nonce)": (
            signer.address,
            hpke_key,
            measurement,
            good[40:],
        ),
        "an expired statement": (
            signer.address,
            hpke_key,
            measurement,
            verifier.attest(deployer, signer.address, hpke_key, measurement, valid_for=-1),
        ),
    }
    for case, (who, key, meas, evidence) in cases.items():
        assert not verifier.verify(who, key, meas, evidence), case
        with pytest.raises(RevertError) as info:
            registry.register(who, key, meas, verifier.address, evidence)
        assert info.value.error == "AttestationRejected", case
        assert info.value.args_by_name == {"verifier": verifier.address}, case
    assert registry.count() == 0
    assert registry.register(signer.address, hpke_key, measurement, verifier.address, good) == 1


def test_zero_signer_and_malformed_hpke_key(contracts: Contracts, deployer: LocalAccount) -> None:
    registry, verifier = contracts.registry, contracts.verifier
    _, hpke_key, measurement = new_enclave_keys()
    signer = Account.create()
    # even a statement the authority really signed does not admit these
    zero_evidence = verifier.attest(deployer, ZERO_ADDRESS, hpke_key, measurement)
    assert verifier.verify(ZERO_ADDRESS, hpke_key, measurement, zero_evidence)
    assert (
        expect_revert(
            "ZeroSigner",
            lambda: registry.register(
                ZERO_ADDRESS, hpke_key, measurement, verifier.address, zero_evidence
            ),
        )
        == {}
    )
    empty_evidence = verifier.attest(deployer, signer.address, b"", measurement)
    assert verifier.verify(signer.address, b"", measurement, empty_evidence)
    assert expect_revert(
        "InvalidHpkeKey",
        lambda: registry.register(
            signer.address, b"", measurement, verifier.address, empty_evidence
        ),
    ) == {"kemId": b"\x00\x00", "length": 0}
    small_order = b"\x00\x20" + b"\x01" + bytes(31)
    weak_evidence = verifier.attest(deployer, signer.address, small_order, measurement)
    assert verifier.verify(signer.address, small_order, measurement, weak_evidence)
    assert expect_revert(
        "SmallOrderX25519Key",
        lambda: registry.register(
            signer.address, small_order, measurement, verifier.address, weak_evidence
        ),
    ) == {"u": small_order[2:]}
    # the cheap input checks come before the verifier is consulted
    expect_revert(
        "ZeroSigner",
        lambda: registry.register(ZERO_ADDRESS, hpke_key, measurement, signer.address, b""),
    )
    expect_revert(
        "InvalidHpkeKey",
        lambda: registry.register(signer.address, b"", measurement, signer.address, b""),
    )
    assert registry.count() == 0


# ------------------------------------------------------------------------ revoke


def test_revoke(chain: Chain, contracts: Contracts, enclave: Enclave) -> None:
    registry = contracts.registry
    outsider = chain.dev_accounts[6]
    args = expect_revert(
        "OwnableUnauthorizedAccount",
        lambda: registry.as_account(outsider).revoke(enclave.enclave_id),
    )
    assert args == {"account": outsider.address}
    assert not registry.get(enclave.enclave_id).revoked

    result = registry.revoke(enclave.enclave_id)
    assert result.events == [result.first(EnclaveRevoked)]
    event: EnclaveRevoked = result.first(EnclaveRevoked)
    assert (event.enclave_id, event.address) == (enclave.enclave_id, registry.address)
    assert (event.signer, event.hpke_key_hash) == (
        enclave.account.address,
        keccak(enclave.hpke_public_key),
    )
    record = registry.get(enclave.enclave_id)
    assert record.revoked
    assert record.signer == enclave.account.address
    signer_of = registry.contract.functions.signerOf(enclave.enclave_id).call()
    assert tuple(signer_of) == (enclave.account.address, enclave.measurement, True)

    args = expect_revert("AlreadyRevoked", lambda: registry.revoke(enclave.enclave_id))
    assert args == {"enclaveId": enclave.enclave_id}


def test_revoked_keys_never_register_again(
    chain: Chain, contracts: Contracts, deployer: LocalAccount, enclave: Enclave
) -> None:
    registry, verifier = contracts.registry, contracts.verifier
    signer, key = enclave.account.address, enclave.hpke_public_key
    # the same keys under a second measurement (new code, same sealed keys)
    new_code = os.urandom(32)
    sibling = registry.register(
        signer, key, new_code, verifier.address, verifier.attest(deployer, signer, key, new_code)
    )
    assert not registry.is_signer_revoked(signer)
    assert not registry.is_hpke_key_revoked(key)
    registry.revoke(enclave.enclave_id)
    assert registry.is_signer_revoked(signer)
    assert registry.is_hpke_key_revoked(key)
    # a record holding revoked keys is revoked too, on chain and for clients
    assert registry.get(sibling).revoked
    assert tuple(registry.contract.functions.signerOf(sibling).call()) == (signer, new_code, True)
    assert expect_revert("AlreadyRevoked", lambda: registry.revoke(sibling)) == {
        "enclaveId": sibling
    }
    other_signer, other_key, measurement = new_enclave_keys()

    def register_fresh(who: str, hpke_key: bytes) -> int:
        """Register with a brand-new statement from the dev authority."""
        evidence = verifier.attest(deployer, who, hpke_key, measurement)
        assert verifier.verify(who, hpke_key, measurement, evidence)
        return registry.register(who, hpke_key, measurement, verifier.address, evidence)

    for who, hpke_key in ((signer, key), (signer, other_key)):
        with pytest.raises(RevertError) as info:
            register_fresh(who, hpke_key)
        assert (info.value.error, info.value.args_by_name) == ("SignerRevoked", {"signer": signer})
        assert str(info.value) == (
            f"EnclaveRegistry.register: signer {signer} belonged to a revoked enclave and can "
            "never register again: use fresh keys"
        )
    assert expect_revert("HpkeKeyRevoked", lambda: register_fresh(other_signer.address, key)) == {
        "hpkeKeyHash": keccak(key)
    }
    assert registry.count() == 2
    fresh = register_fresh(other_signer.address, other_key)
    assert fresh == 3
    assert not registry.get(fresh).revoked


def test_evidence_registers_once(
    chain: Chain, contracts: Contracts, deployer: LocalAccount
) -> None:
    registry, verifier = contracts.registry, contracts.verifier
    signer, hpke_key, measurement = new_enclave_keys()
    evidence = verifier.attest(deployer, signer.address, hpke_key, measurement)
    assert not registry.is_evidence_used(evidence)
    first = registry.register(signer.address, hpke_key, measurement, verifier.address, evidence)
    assert registry.is_evidence_used(evidence)
    # still valid, still unexpired, and refused: the same statement registers once
    assert verifier.verify(signer.address, hpke_key, measurement, evidence)
    args = expect_revert(
        "EvidenceReused",
        lambda: registry.register(
            signer.address, hpke_key, measurement, verifier.address, evidence
        ),
    )
    assert args == {"evidenceHash": keccak(evidence)}
    # a fresh statement about the same keys is another evidence (a new nonce)
    again = verifier.attest(deployer, signer.address, hpke_key, measurement)
    assert again != evidence
    assert DevEvidence.from_bytes(again).nonce != DevEvidence.from_bytes(evidence).nonce
    second = registry.register(signer.address, hpke_key, measurement, verifier.address, again)
    assert (first, second) == (1, 2)


def test_statement_expires(chain: Chain, contracts: Contracts, deployer: LocalAccount) -> None:
    registry, verifier = contracts.registry, contracts.verifier
    signer, hpke_key, measurement = new_enclave_keys()
    evidence = verifier.attest(deployer, signer.address, hpke_key, measurement, valid_for=100)
    valid_until = DevEvidence.from_bytes(evidence).valid_until
    assert valid_until == chain.timestamp() + 100
    assert verifier.verify(signer.address, hpke_key, measurement, evidence)
    chain.advance_time(valid_until - chain.timestamp() + 5)
    assert chain.timestamp() > valid_until
    assert not verifier.verify(signer.address, hpke_key, measurement, evidence)
    args = expect_revert(
        "AttestationRejected",
        lambda: registry.register(
            signer.address, hpke_key, measurement, verifier.address, evidence
        ),
    )
    assert args == {"verifier": verifier.address}
    assert not registry.is_evidence_used(evidence)
    assert registry.count() == 0


def test_unknown_enclave(contracts: Contracts, enclave: Enclave) -> None:
    registry = contracts.registry
    unknown = registry.count() + 1
    for enclave_id in (0, unknown, 2**256 - 1):
        with pytest.raises(RevertError) as info:
            registry.get(enclave_id)
        assert info.value.error == "UnknownEnclave"
        assert info.value.args_by_name == {"enclaveId": enclave_id}
        assert (
            str(info.value) == f"EnclaveRegistry.getEnclave: enclave {enclave_id} is not registered"
        )
    assert expect_revert("UnknownEnclave", lambda: registry.revoke(unknown)) == {
        "enclaveId": unknown
    }
    signer_of = registry.contract.functions.signerOf(unknown)
    args = expect_revert(
        "UnknownEnclave",
        lambda: guard_call(registry.chain.decoder, "EnclaveRegistry", "signerOf", signer_of.call),
    )
    assert args == {"enclaveId": unknown}
    assert registry.get(enclave.enclave_id).signer == enclave.account.address


# ------------------------------------------------------------ EIP-712 statements


def test_statement_does_not_replay_across_contracts_or_chains(
    chain: Chain, contracts: Contracts, deployer: LocalAccount
) -> None:
    registry, first = contracts.registry, contracts.verifier
    # a second verifier with the SAME authority: only the domain tells them apart
    second, _ = DevVerifierClient.deploy(chain, deployer, deployer.address)
    registry.set_verifier(second.address, True)
    signer, hpke_key, measurement = new_enclave_keys()
    for_first = first.attest(deployer, signer.address, hpke_key, measurement)
    for_second = second.attest(deployer, signer.address, hpke_key, measurement)
    assert for_first != for_second
    assert first.verify(signer.address, hpke_key, measurement, for_first)
    assert not second.verify(signer.address, hpke_key, measurement, for_first)
    assert not first.verify(signer.address, hpke_key, measurement, for_second)
    args = expect_revert(
        "AttestationRejected",
        lambda: registry.register(signer.address, hpke_key, measurement, second.address, for_first),
    )
    assert args == {"verifier": second.address}

    other_chain = dataclasses.replace(first.domain(), chain_id=chain.chain_id + 1)
    for_other_chain = sign_enclave_statement(
        deployer,
        other_chain,
        signer.address,
        hpke_key,
        measurement,
        valid_until=chain.timestamp() + 600,
        nonce=os.urandom(32),
    )
    assert not first.verify(signer.address, hpke_key, measurement, for_other_chain)
    expect_revert(
        "AttestationRejected",
        lambda: registry.register(
            signer.address, hpke_key, measurement, first.address, for_other_chain
        ),
    )
    enclave_id = registry.register(
        signer.address, hpke_key, measurement, second.address, for_second
    )
    assert registry.get(enclave_id).verifier == second.address


def test_python_statements_agree_with_contract(chain: Chain, deployer: LocalAccount) -> None:
    verifier, _ = DevVerifierClient.deploy(chain, deployer, deployer.address)
    domain = verifier.domain()
    stranger = Account.create()
    for hpke_key in (b"\x01", b"\x00\x20" + os.urandom(32), os.urandom(300)):
        signer = Account.create().address
        measurement, nonce = os.urandom(32), os.urandom(32)
        valid_until = chain.timestamp() + 77
        message = {
            "signer": signer,
            "hpkeKeyHash": chain.w3.keccak(hpke_key),
            "measurement": measurement,
            "validUntil": valid_until,
            "nonce": nonce,
        }
        on_chain = verifier.contract.functions.statementDigest(
            signer, hpke_key, measurement, valid_until, nonce
        ).call()
        assert bytes(on_chain) == typed_data_digest(
            domain, ENCLAVE_STATEMENT_TYPES, "EnclaveStatement", message
        )
        evidence = verifier.attest(
            deployer, signer, hpke_key, measurement, valid_for=77, nonce=nonce
        )
        assert len(evidence) == verifier.contract.functions.EVIDENCE_LENGTH().call()
        assert DevEvidence.from_bytes(evidence).valid_until == valid_until
        assert DevEvidence.from_bytes(evidence).nonce == nonce
        assert recover_enclave_statement(domain, signer, hpke_key, measurement, evidence) == (
            deployer.address
        )
        assert verifier.verify(signer, hpke_key, measurement, evidence)

        forged = verifier.attest(stranger, signer, hpke_key, measurement)
        assert recover_enclave_statement(domain, signer, hpke_key, measurement, forged) == (
            stranger.address
        )
        assert not verifier.verify(signer, hpke_key, measurement, forged)

        other_measurement = os.urandom(32)
        recovered = recover_enclave_statement(domain, signer, hpke_key, other_measurement, evidence)
        assert recovered != deployer.address
        assert not verifier.verify(signer, hpke_key, other_measurement, evidence)


def _malleate_high_s(evidence: bytes) -> bytes:
    """The same ECDSA signature with ``s`` replaced by ``n - s`` (and v flipped)."""
    parsed = DevEvidence.from_bytes(evidence)
    signature = parsed.signature
    s = int.from_bytes(signature[32:64], "big")
    high = signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])
    return dataclasses.replace(parsed, signature=high).to_bytes()


def _v_as_parity(evidence: bytes) -> bytes:
    """The same signature with ``v`` written as 0/1 instead of 27/28."""
    parsed = DevEvidence.from_bytes(evidence)
    signature = parsed.signature[:64] + bytes([parsed.signature[64] - 27])
    return dataclasses.replace(parsed, signature=signature).to_bytes()


@pytest.mark.parametrize("variant", [_malleate_high_s, _v_as_parity], ids=["high-s", "v-parity"])
def test_python_recovery_rejects_what_the_contract_rejects(
    chain: Chain, deployer: LocalAccount, variant: Callable[[bytes], bytes]
) -> None:
    verifier, _ = DevVerifierClient.deploy(chain, deployer, deployer.address)
    signer, hpke_key, measurement = new_enclave_keys()
    evidence = variant(verifier.attest(deployer, signer.address, hpke_key, measurement))
    assert not verifier.verify(signer.address, hpke_key, measurement, evidence)
    try:
        recovered: str | None = recover_enclave_statement(
            verifier.domain(), signer.address, hpke_key, measurement, evidence
        )
    except SignatureError:  # refusing to recover would also agree with the contract
        recovered = None
    assert recovered != deployer.address
