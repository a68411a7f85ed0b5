"""EIP-712 signing: round trips, and no replay across chains, contracts or messages."""

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from cotune.crypto import (
    Eip712Domain,
    SignatureError,
    recover_typed_data_signer,
    sign_typed_data,
    typed_data,
    typed_data_digest,
    verify_typed_data,
)

SIGNER = Account.create()
DOMAIN = Eip712Domain("cotune", "1", 31337, "0x" + "c0" * 20)
TYPES = {
    "RejectionCertificate": [
        ("sessionId", "uint256"),
        ("contributor", "address"),
        ("ciphertextHash", "bytes32"),
        ("reasonCode", "uint8"),
        ("score", "int256"),
        ("evidenceHash", "bytes32"),
    ]
}


def _message(**overrides: object) -> dict[str, object]:
    message: dict[str, object] = {
        "sessionId": 7,
        "contributor": "0x" + "ab" * 20,
        "ciphertextHash": b"\x11" * 32,
        "reasonCode": 3,
        "score": -1250,
        "evidenceHash": b"\x22" * 32,
    }
    message.update(overrides)
    return message


def _sign(domain: Eip712Domain = DOMAIN, message: dict[str, object] | None = None) -> bytes:
    return sign_typed_data(SIGNER, domain, TYPES, "RejectionCertificate", message or _message())


@given(
    session=st.integers(0, 2**256 - 1),
    score=st.integers(-(2**255), 2**255 - 1),
    reason=st.integers(0, 255),
    digest=st.binary(min_size=32, max_size=32),
)
def test_round_trip(session: int, score: int, reason: int, digest: bytes) -> None:
    message = _message(sessionId=session, score=score, reasonCode=reason, ciphertextHash=digest)
    signature = _sign(message=message)
    assert len(signature) == 65
    signer = recover_typed_data_signer(DOMAIN, TYPES, "RejectionCertificate", message, signature)
    assert signer == SIGNER.address


def test_digest_is_what_was_signed() -> None:
    digest = typed_data_digest(DOMAIN, TYPES, "RejectionCertificate", _message())
    assert Account.unsafe_sign_hash(digest, SIGNER.key).signature == _sign()


@pytest.mark.parametrize(
    "other",
    [
        Eip712Domain("cotune", "1", 1, DOMAIN.verifying_contract),
        Eip712Domain("cotune", "1", 31337, "0x" + "c1" * 20),
        Eip712Domain("cotune", "2", 31337, DOMAIN.verifying_contract),
        Eip712Domain("other", "1", 31337, DOMAIN.verifying_contract),
    ],
    ids=["chain", "contract", "version", "name"],
)
def test_no_replay_across_domains(other: Eip712Domain) -> None:
    with pytest.raises(SignatureError, match="expected"):
        verify_typed_data(SIGNER.address, other, TYPES, "RejectionCertificate", _message(), _sign())


def test_altered_message_does_not_verify() -> None:
    with pytest.raises(SignatureError):
        verify_typed_data(
            SIGNER.address, DOMAIN, TYPES, "RejectionCertificate", _message(score=0), _sign()
        )


def test_verify_accepts_right_signer() -> None:
    verify_typed_data(
        SIGNER.address.lower(), DOMAIN, TYPES, "RejectionCertificate", _message(), _sign()
    )


def test_malformed_signature() -> None:
    with pytest.raises(SignatureError, match="65 bytes"):
        recover_typed_data_signer(DOMAIN, TYPES, "RejectionCertificate", _message(), b"\x00" * 64)
    with pytest.raises(SignatureError):
        recover_typed_data_signer(DOMAIN, TYPES, "RejectionCertificate", _message(), b"\x00" * 65)


def test_unknown_primary_type() -> None:
    with pytest.raises(ValueError, match="primary type"):
        typed_data(DOMAIN, TYPES, "Nope", {})


def test_document_shape() -> None:
    document = typed_data(DOMAIN, TYPES, "RejectionCertificate", _message())
    assert document["domain"]["chainId"] == 31337
    assert document["types"]["EIP712Domain"][2] == {"name": "chainId", "type": "uint256"}
