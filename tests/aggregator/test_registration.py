"""Registering the aggregator's enclave: revoked keys stay out, fresh statements stay valid.

A revoked enclave's keys are blocked for good on chain, so ``Aggregator.register`` (and
``cotune aggregator run``, which calls it at every start) refuses them with one clear
error before sending anything, and the operator starts over with fresh keys. The dev
statement expires, but only its registration is bound by that: a registered enclave
keeps verifying off chain after the expiry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner

from cotune.aggregator.attestation import (
    AttestationError,
    DevStatementVerifier,
    RevokedKeysError,
    verify_enclave,
)
from cotune.aggregator.service import Aggregator, AggregatorConfig
from cotune.chain.connection import Chain, connect
from cotune.chain.deployment import Contracts, Deployment, deploy_all
from cotune.chain.statements import DevEvidence
from cotune.cli.app import app
from cotune.storage.local import LocalStore

SECRET = "operator secret"


def aggregator(chain: Chain, deployment: Deployment, root: Path) -> Aggregator:
    """An aggregator whose keys and state live in ``root / "agg"``."""
    return Aggregator(
        chain, deployment, LocalStore(root / "store"), AggregatorConfig(root / "agg", SECRET)
    )


@pytest.fixture
def world() -> tuple[Chain, Deployment, LocalAccount]:
    """An embedded chain, its contracts, and the operator (registry admin, dev authority)."""
    chain = connect("embedded")
    operator = chain.dev_accounts[0]
    return chain, deploy_all(chain, operator), operator


def test_register_refuses_revoked_keys_and_fresh_keys_register(
    world: tuple[Chain, Deployment, LocalAccount], tmp_path: Path
) -> None:
    chain, deployment, operator = world
    registry = Contracts.at(chain, deployment, operator).registry
    service = aggregator(chain, deployment, tmp_path)
    enclave_id = service.register(operator, operator)
    assert service.register(operator, operator) == enclave_id  # a live record is reused

    registry.revoke(enclave_id)
    block = chain.block_number()
    for _ in range(2):  # a restart meets the same refusal
        with pytest.raises(RevokedKeysError) as info:
            aggregator(chain, deployment, tmp_path).register(operator, operator)
        message = str(info.value)
        assert "revoked this enclave's keys" in message
        assert service.keys.public.signer in message
        assert "a new --data-dir" in message
        assert str(tmp_path / "agg" / "enclave.sealed.json") in message
    assert isinstance(info.value, AttestationError)
    assert chain.block_number() == block  # nothing was sent: no funding, no registration
    assert registry.count() == 1

    (tmp_path / "agg" / "enclave.sealed.json").unlink()  # what the error says to do
    fresh = aggregator(chain, deployment, tmp_path)
    assert fresh.keys.public.signer != service.keys.public.signer
    assert fresh.enclave_id == enclave_id  # the state still names the revoked record ...
    new_id = fresh.register(operator, operator)  # ... which holds other keys: not reused
    assert new_id == enclave_id + 1
    assert fresh.enclave_id == new_id
    record = registry.get(new_id)
    assert (record.signer, record.revoked) == (fresh.keys.public.signer, False)


def test_register_never_reuses_a_record_of_other_keys(
    world: tuple[Chain, Deployment, LocalAccount], tmp_path: Path
) -> None:
    chain, deployment, operator = world
    first = aggregator(chain, deployment, tmp_path)
    enclave_id = first.register(operator, operator)
    (tmp_path / "agg" / "enclave.sealed.json").unlink()  # new keys, same state store
    second = aggregator(chain, deployment, tmp_path)
    assert second.enclave_id == enclave_id
    new_id = second.register(operator, operator)
    assert new_id != enclave_id
    record = Contracts.at(chain, deployment).registry.get(new_id)
    assert record.signer == second.keys.public.signer
    assert record.hpke_public_key == second.keys.public.hpke_public_key.to_bytes()


def test_dev_statement_binds_registration_not_the_enclave_lifetime(
    world: tuple[Chain, Deployment, LocalAccount], tmp_path: Path
) -> None:
    chain, deployment, operator = world
    contracts = Contracts.at(chain, deployment)
    enclave_id = aggregator(chain, deployment, tmp_path).register(operator, operator)
    verifiers = {contracts.verifier.address: DevStatementVerifier(contracts.verifier)}
    record = contracts.registry.get(enclave_id)
    valid_until = DevEvidence.from_bytes(record.evidence).valid_until
    assert record.registered_at <= valid_until

    chain.advance_time(valid_until - chain.timestamp() + 10)
    assert chain.timestamp() > valid_until
    verified = verify_enclave(contracts.registry, verifiers, enclave_id)  # still valid
    assert verified.record == record

    late = dataclasses.replace(record, registered_at=valid_until + 1)
    with pytest.raises(AttestationError, match=f"expired at {valid_until}, before the enclave"):
        DevStatementVerifier(contracts.verifier).verify(late)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_aggregator_run_says_in_one_line_that_revoked_keys_need_fresh_ones(
    anvil_url: str, tmp_path: Path, as_json: bool
) -> None:
    chain = connect(anvil_url)
    operator = chain.dev_accounts[0]
    deployment = deploy_all(chain, operator)
    record = tmp_path / "deployment.json"
    deployment.save(record)
    enclave_id = aggregator(chain, deployment, tmp_path).register(operator, operator)
    Contracts.at(chain, deployment, operator).registry.revoke(enclave_id)

    args = ["aggregator", "run", "--once", "--api-port", "0", "--chain", anvil_url]
    args += ["--deployment", str(record), "--storage", str(tmp_path / "store")]
    args += ["--data-dir", str(tmp_path / "agg")] + (["--json"] if as_json else [])
    result = CliRunner().invoke(app, args, env={"COTUNE_ENCLAVE_SECRET": SECRET})

    assert result.exit_code == 1, result.output
    assert result.stdout == ""  # no enclave line, no JSON object: it never started
    # the error is one line on stderr, in --json mode as for every command
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: RevokedKeysError: the registry revoked this enclave's keys")
    assert "a new --data-dir, or delete" in line
    assert line.endswith(str(tmp_path / "agg" / "enclave.sealed.json"))
