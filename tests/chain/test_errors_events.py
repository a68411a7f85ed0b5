"""Revert decoding, event dataclasses, deployment records and artifacts, mostly off chain.

The ABIs of the committed artifacts are the source of truth: every custom error they
declare must decode (hypothesis builds payloads for random argument values) and read
as a sentence; every event must have a typed dataclass whose fields are the ABI
inputs in snake_case, and decode from a log. Only ``Deployment.check`` needs a chain.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_tester.exceptions import TransactionFailed  # type: ignore[import-untyped]
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import assume, given
from hypothesis import strategies as st
from web3.exceptions import ContractCustomError, ContractLogicError

from cotune.chain import Chain, Deployment, DeploymentError, RevertError
from cotune.chain.artifacts import CONTRACT_NAMES, load_artifact
from cotune.chain.errors import (
    ErrorDecoder,
    describe_error,
    known_error_names,
    revert_data,
)
from cotune.chain.events import (
    EVENT_TYPES,
    EnclaveRegistered,
    Event,
    Transfer,
    decode_log,
    event_field_names,
    event_topic,
    snake_case,
)
from cotune.chain.transactions import guard_call

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
ADDRESS = "0x" + "11" * 20


def _signature(item: dict[str, Any]) -> str:
    return f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"


@cache
def _abi_items(kind: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(contract, ABI item) for every item of ``kind`` in every artifact."""
    return tuple(
        (name, item)
        for name in CONTRACT_NAMES
        for item in load_artifact(name).abi
        if item.get("type") == kind
    )


ABI_ERRORS = {_signature(item): item for _, item in _abi_items("error")}
"""Every distinct custom error, by signature (shared ones such as LengthMismatch once)."""
ABI_EVENTS = [
    (contract, item)
    for contract, item in _abi_items("event")
    if item["name"] != "EIP712DomainChanged"
]
DECODER = ErrorDecoder(load_artifact(name).abi for name in CONTRACT_NAMES)


def abi_values(kind: str) -> st.SearchStrategy[Any]:
    """Values of one elementary ABI type, as the decoder hands them back."""
    if kind == "address":
        return st.binary(min_size=20, max_size=20).map(to_checksum_address)
    if kind == "bool":
        return st.booleans()
    if kind == "string":
        return st.text(max_size=40)
    if kind == "bytes":
        return st.binary(max_size=80)
    if match := re.fullmatch(r"bytes(\d+)", kind):
        size = int(match[1])
        return st.binary(min_size=size, max_size=size)
    if match := re.fullmatch(r"uint(\d+)", kind):
        return st.integers(0, 2 ** int(match[1]) - 1)
    if match := re.fullmatch(r"int(\d+)", kind):
        bits = int(match[1])
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    raise NotImplementedError(kind)


def _template_fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


# ------------------------------------------------------------------ error messages


def test_every_abi_error_has_a_written_message() -> None:
    missing = {item["name"] for item in ABI_ERRORS.values()} - known_error_names()
    assert missing == set()


def test_every_error_declared_in_our_contracts_has_a_message() -> None:
    declared = {
        name
        for source in CONTRACTS_DIR.glob("*.sol")
        for name in re.findall(r"^\s*error\s+(\w+)\s*\(", source.read_text(), re.MULTILINE)
    }
    assert len(declared) > 30
    assert declared - known_error_names() == set()


def test_no_message_for_an_error_no_contract_has() -> None:
    in_abis = {item["name"] for item in ABI_ERRORS.values()}
    assert known_error_names() - in_abis == set()


@pytest.mark.parametrize("signature", sorted(ABI_ERRORS))
def test_message_placeholders_are_abi_argument_names(signature: str) -> None:
    item = ABI_ERRORS[signature]
    names = [i["name"] for i in item["inputs"]]
    args = {name: 10 + n for n, name in enumerate(names)}
    text = describe_error(item["name"], args)
    assert text
    assert "{" not in text
    if item["name"] not in known_error_names():
        assert text == f"{item['name']}({', '.join(f'{k}={v}' for k, v in args.items())})"


def test_message_shows_enums_by_name_and_bytes_in_hex() -> None:
    assert describe_error("WrongState", {"sessionId": 4, "actual": 2, "required": 1}) == (
        "session 4 is not Open: it is Training"
    )
    assert "its contribution is Slashed" in describe_error(
        "NotEligible", {"sessionId": 1, "contributor": ADDRESS, "status": 3}
    )
    text = describe_error("MeasurementMismatch", {"pinned": b"\x01" * 2, "registered": b"\xff"})
    assert text == "pinned measurement 0x0101 differs from the enclave's 0xff"
    assert describe_error("Custom", {"a": 1, "b": b"\x02"}) == "Custom(a=1, b=0x02)"


def test_stake_too_low_shows_wei_not_a_state_name() -> None:
    payload = keccak(text="StakeTooLow(uint256,uint256)")[:4] + abi_encode(
        ["uint256", "uint256"], [1, 2]
    )
    name, args = DECODER.decode(payload)
    assert describe_error(name, args) == "stake 1 wei is below the session's minimum of 2 wei"


# ------------------------------------------------------------------ error decoding


def test_selectors_match_known_values() -> None:
    """Selectors computed from the ABI agree with ones seen on chain and in OpenZeppelin."""
    known = {
        "UnknownEnclave": "d74c09fd",
        "OwnableUnauthorizedAccount": "118cdaa7",
        "ZeroAuthority": "5ccfa562",
        "ERC721NonexistentToken": "7e273289",
    }
    for name, selector in known.items():
        [signature] = [s for s, item in ABI_ERRORS.items() if item["name"] == name]
        assert keccak(text=signature)[:4].hex() == selector
        arity = len(ABI_ERRORS[signature]["inputs"])
        assert DECODER.decode(bytes.fromhex(selector) + bytes(32) * arity)[0] == name


@pytest.mark.parametrize("signature", sorted(ABI_ERRORS))
@given(data=st.data())
def test_decoder_round_trip(signature: str, data: st.DataObject) -> None:
    item = ABI_ERRORS[signature]
    names = [i["name"] for i in item["inputs"]]
    types = [i["type"] for i in item["inputs"]]
    values = [
        data.draw(abi_values(kind), label=name) for name, kind in zip(names, types, strict=True)
    ]
    payload = keccak(text=signature)[:4] + abi_encode(types, values)
    error, args = DECODER.decode(payload)
    assert error == item["name"]
    assert args == dict(zip(names, values, strict=True))
    assert describe_error(error, args)  # renders for any argument values
    exc = RevertError("C", "f", error, args)
    assert str(exc).startswith("C.f: ")
    assert exc.args_by_name == args


@given(reason=st.text(max_size=200))
def test_decodes_error_string(reason: str) -> None:
    payload = keccak(text="Error(string)")[:4] + abi_encode(["string"], [reason])
    assert DECODER.decode(payload) == ("Error", {"reason": reason})


@given(code=st.integers(0, 2**256 - 1))
def test_decodes_panic(code: int) -> None:
    payload = keccak(text="Panic(uint256)")[:4] + abi_encode(["uint256"], [code])
    assert DECODER.decode(payload) == ("Panic", {"code": code})


@given(selector=st.binary(min_size=4, max_size=4), body=st.binary(max_size=64))
def test_unknown_selector(selector: bytes, body: bytes) -> None:
    known = {keccak(text=s)[:4] for s in [*ABI_ERRORS, "Error(string)", "Panic(uint256)"]}
    assume(selector not in known)
    assert DECODER.decode(selector + body) == ("UnknownError", {"data": selector + body})


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x02\x03"])
def test_payload_shorter_than_a_selector(data: bytes) -> None:
    assert DECODER.decode(data) == ("EmptyRevert", {})


def test_decoder_knows_only_the_abis_it_was_given() -> None:
    registry_only = ErrorDecoder([load_artifact("EnclaveRegistry").abi])
    unknown_enclave = keccak(text="UnknownEnclave(uint256)")[:4] + abi_encode(["uint256"], [3])
    assert registry_only.decode(unknown_enclave) == ("UnknownEnclave", {"enclaveId": 3})
    not_minter = keccak(text="NotMinter(address)")[:4] + abi_encode(["address"], [ADDRESS])
    assert registry_only.decode(not_minter)[0] == "UnknownError"
    assert DECODER.decode(not_minter) == ("NotMinter", {"caller": ADDRESS})


# --------------------------------------------------------------------- revert data


@given(payload=st.binary(max_size=100))
def test_revert_data_from_web3_hex_data(payload: bytes) -> None:
    hex_data = "0x" + payload.hex()
    assert revert_data(ContractCustomError(hex_data, data=hex_data)) == payload
    assert revert_data(ContractLogicError("execution reverted", data=hex_data)) == payload


@given(payload=st.binary(max_size=100))
def test_revert_data_from_eth_tester_bytes_repr(payload: bytes) -> None:
    assert revert_data(TransactionFailed(f"execution reverted: {payload!r}")) == payload


def test_revert_data_other_forms() -> None:
    class WithBytesError(Exception):
        data = b"\x01\x02"

    assert revert_data(WithBytesError()) == b"\x01\x02"
    assert revert_data(TransactionFailed("execution reverted: 0x5ccfa562")) == bytes.fromhex(
        "5ccfa562"
    )
    assert revert_data(TransactionFailed("execution reverted: not allowed")) is None
    assert revert_data(ValueError("something else")) is None
    assert revert_data(ValueError()) is None


@pytest.mark.parametrize("reason", ["0x is not a valid owner", "b'x' is not bytes"])
def test_revert_data_survives_reason_strings_that_look_like_payloads(reason: str) -> None:
    assert revert_data(TransactionFailed(f"execution reverted: {reason}")) is None


def test_guard_call_turns_reverts_into_revert_errors() -> None:
    payload = keccak(text="UnknownEnclave(uint256)")[:4] + abi_encode(["uint256"], [5])
    raised: list[Exception] = [
        TransactionFailed(f"execution reverted: {payload!r}"),
        ContractCustomError("0x" + payload.hex(), data="0x" + payload.hex()),
    ]
    for exc in raised:

        def fail(exc: Exception = exc) -> None:
            raise exc

        with pytest.raises(RevertError) as info:
            guard_call(DECODER, "EnclaveRegistry", "getEnclave", fail)
        assert info.value.error == "UnknownEnclave"
        assert info.value.args_by_name == {"enclaveId": 5}
        assert str(info.value) == "EnclaveRegistry.getEnclave: enclave 5 is not registered"
        assert info.value.__cause__ is exc

    def reason() -> None:
        raise TransactionFailed("execution reverted: nope")

    with pytest.raises(RevertError) as info:
        guard_call(DECODER, "C", "f", reason)
    assert info.value.error == "Error"

    def unrelated() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        guard_call(DECODER, "C", "f", unrelated)
    assert guard_call(DECODER, "C", "f", lambda: 42) == 42


# -------------------------------------------------------------------------- events


def _event_class(contract: str, name: str) -> type[Event] | None:
    wanted = (contract, name)
    found = [cls for cls in EVENT_TYPES if wanted == (cls.CONTRACT, cls.NAME)]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.mark.parametrize(
    ("contract", "item"), ABI_EVENTS, ids=[f"{c}.{i['name']}" for c, i in ABI_EVENTS]
)
def test_every_abi_event_has_a_dataclass(contract: str, item: dict[str, Any]) -> None:
    cls = _event_class(contract, item["name"])
    assert cls is not None, f"no event type for {contract}.{item['name']}"
    assert event_field_names(cls) == [snake_case(i["name"]) for i in item["inputs"]]
    assert event_topic(cls) == keccak(text=_signature(item))


def test_event_types_are_exactly_the_abi_events() -> None:
    in_abis = {(contract, item["name"]) for contract, item in ABI_EVENTS}
    declared = [(cls.CONTRACT, cls.NAME) for cls in EVENT_TYPES]
    assert len(declared) == len(set(declared))
    assert set(declared) == in_abis
    assert all(dataclasses.is_dataclass(cls) and issubclass(cls, Event) for cls in EVENT_TYPES)


def test_snake_case() -> None:
    assert snake_case("ciphertextHash") == "ciphertext_hash"
    assert snake_case("hpkePublicKey") == "hpke_public_key"
    assert snake_case("tokenId") == "token_id"
    assert snake_case("from") == "from_"
    assert snake_case("to") == "to"
    assert snake_case("sessionId") == "session_id"
    assert event_field_names(Transfer) == ["from_", "to", "token_id"]
    assert event_topic(Transfer).hex() == (
        "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    )


def _log(item: dict[str, Any], values: dict[str, Any], *, hex_strings: bool) -> dict[str, Any]:
    topics = [keccak(text=_signature(item))]
    topics += [abi_encode([i["type"]], [values[i["name"]]]) for i in item["inputs"] if i["indexed"]]
    data_inputs = [i for i in item["inputs"] if not i["indexed"]]
    data = abi_encode([i["type"] for i in data_inputs], [values[i["name"]] for i in data_inputs])
    tx_hash = bytes(range(32))

    def show(raw: bytes) -> Any:
        return "0x" + raw.hex() if hex_strings else raw

    return {
        "address": ADDRESS,  # not checksummed: the decoder must normalise it
        "topics": [show(t) for t in topics],
        "data": show(data),
        "blockNumber": 12,
        "logIndex": 3,
        "transactionHash": show(tx_hash),
    }


@pytest.mark.parametrize(
    ("contract", "item"), ABI_EVENTS, ids=[f"{c}.{i['name']}" for c, i in ABI_EVENTS]
)
@given(data=st.data(), hex_strings=st.booleans())
def test_decode_log_round_trip(
    contract: str, item: dict[str, Any], data: st.DataObject, hex_strings: bool
) -> None:
    values = {i["name"]: data.draw(abi_values(i["type"]), label=i["name"]) for i in item["inputs"]}
    event = decode_log(_log(item, values, hex_strings=hex_strings))
    cls = _event_class(contract, item["name"])
    assert cls is not None
    assert type(event) is cls
    assert event.address == to_checksum_address(ADDRESS)
    assert event.position == (12, 3)
    assert event.tx_hash == "0x" + bytes(range(32)).hex()
    assert {f: getattr(event, f) for f in event_field_names(cls)} == {
        snake_case(name): value for name, value in values.items()
    }


def test_decode_log_ignores_foreign_logs() -> None:
    base = {"address": ADDRESS, "data": "0x", "blockNumber": 1, "logIndex": 0}
    assert decode_log({**base, "topics": [], "transactionHash": "0x00"}) is None
    foreign = keccak(text="Foreign(uint256)")
    assert decode_log({**base, "topics": [foreign], "transactionHash": "0x00"}) is None
    registered = next(item for c, item in ABI_EVENTS if item["name"] == "EnclaveRegistered")
    values = {"enclaveId": 1, "signer": ADDRESS, "verifier": ADDRESS}
    values |= {"measurement": bytes(32), "hpkePublicKey": b"k"}
    assert isinstance(decode_log(_log(registered, values, hex_strings=True)), EnclaveRegistered)


# ---------------------------------------------------------------------- deployment


def _deployment(**overrides: Any) -> Deployment:
    values: dict[str, Any] = {
        "chain_id": 31337,
        "block_number": 5,
        "deployer": to_checksum_address("0x" + "a1" * 20),
        "dev_authority": to_checksum_address("0x" + "b2" * 20),
        "slash_window": 3600,
        "coordinator": to_checksum_address("0x" + "c3" * 20),
        "enclave_registry": to_checksum_address("0x" + "d4" * 20),
        "dev_verifier": to_checksum_address("0x" + "e5" * 20),
        "model_nft": to_checksum_address("0x" + "f6" * 20),
        "dataset_market": to_checksum_address("0x" + "a7" * 20),
    }
    values.update(overrides)
    return Deployment(**values)


def test_deployment_json_round_trip(tmp_path: Path) -> None:
    record = _deployment()
    text = record.to_json()
    assert text.endswith("\n")
    raw = json.loads(text)
    assert list(raw) == sorted(raw)
    assert raw["version"] == 3
    assert Deployment.from_dict(raw) == record
    path = tmp_path / "deployment.json"
    record.save(path)
    assert Deployment.load(path) == record
    lower = {k: v.lower() if isinstance(v, str) else v for k, v in raw.items()}
    assert Deployment.from_dict(lower) == record  # addresses come back checksummed


FIELDS = [f.name for f in dataclasses.fields(Deployment) if f.name != "version"]


@pytest.mark.parametrize("field", FIELDS)
def test_from_dict_names_a_missing_or_mistyped_field(field: str) -> None:
    raw = json.loads(_deployment().to_json())
    is_int = isinstance(raw[field], int)
    for bad in (None, "7" if is_int else 7, True, [1]):
        broken = {**raw, field: bad}
        if bad is None:
            del broken[field]
        with pytest.raises(DeploymentError, match=rf"'{field}' must be") as info:
            Deployment.from_dict(broken, "my.json")
        assert str(info.value).startswith("my.json: ")


@pytest.mark.parametrize("version", [None, 0, 1, 2, "3"])
def test_from_dict_refuses_other_versions(version: object) -> None:
    raw = json.loads(_deployment().to_json())
    raw["version"] = version
    if version is None:
        del raw["version"]
    with pytest.raises(DeploymentError, match="version"):
        Deployment.from_dict(raw)


@pytest.mark.parametrize("bad", ["not-an-address", "0x1234", "0x" + "zz" * 20])
def test_from_dict_names_a_malformed_address(bad: str) -> None:
    raw = json.loads(_deployment().to_json())
    raw["coordinator"] = bad
    with pytest.raises(DeploymentError, match="coordinator"):
        Deployment.from_dict(raw)


def test_load_reports_unreadable_records(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="no deployment record"):
        Deployment.load(tmp_path / "missing.json")
    path = tmp_path / "d.json"
    path.write_text("{oops")
    with pytest.raises(DeploymentError, match="not JSON"):
        Deployment.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(DeploymentError, match="expected a JSON object"):
        Deployment.load(path)
    path.write_text(json.dumps({**json.loads(_deployment().to_json()), "slash_window": "x"}))
    with pytest.raises(DeploymentError, match=rf"{re.escape(str(path))}: field 'slash_window'"):
        Deployment.load(path)


def test_deployment_check(chain: Chain, deployment: Deployment) -> None:
    deployment.check(chain)
    wrong_chain = dataclasses.replace(deployment, chain_id=chain.chain_id + 1)
    with pytest.raises(DeploymentError, match=f"connected to chain {chain.chain_id}"):
        wrong_chain.check(chain)
    nowhere = Account.create().address
    for field, contract in (
        ("coordinator", "Coordinator"),
        ("enclave_registry", "EnclaveRegistry"),
        ("dev_verifier", "DevAttestationVerifier"),
        ("model_nft", "ModelNFT"),
        ("dataset_market", "DatasetMarket"),
    ):
        without_code = dataclasses.replace(deployment, **{field: nowhere})
        with pytest.raises(DeploymentError, match=f"no {contract} code at {nowhere}"):
            without_code.check(chain)
    swapped = dataclasses.replace(deployment, model_nft=deployment.dev_verifier)
    with pytest.raises(
        DeploymentError, match=r"ModelNFT at 0x\w+ is not the code this cotune ships"
    ):
        swapped.check(chain)


# ----------------------------------------------------------------------- artifacts


def test_load_artifact() -> None:
    for name in CONTRACT_NAMES:
        artifact = load_artifact(name)
        assert artifact.name == name
        assert artifact.abi
        assert artifact.bytecode.startswith("0x")
        assert artifact.deployed_bytecode.startswith("0x")
        assert load_artifact(name) is artifact  # cached
    with pytest.raises(KeyError, match="no artifact for 'Nope'; known: Coordinator"):
        load_artifact("Nope")
    with pytest.raises(KeyError):
        load_artifact("IAttestationVerifier")
