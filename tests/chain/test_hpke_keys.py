"""HPKE public keys checked on chain (``contracts/HpkeKeys.sol``) as cotune's crypto checks them.

``Coordinator.submit`` (a contributor's key) and ``EnclaveRegistry.register`` (an
enclave's key) admit exactly the keys the aggregator can seal to: a known KEM id with that
KEM's length, an X25519 part that is not of small order, an ML-KEM-768 part whose
coefficients are reduced. Hypothesis compares the contract with ``HpkePublicKey`` plus a
real ``seal`` over random and mutated keys; the small-order list is checked against the
``cryptography`` package's X25519.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from chain_fixtures import Enclave, expect_revert, session_params
from cryptography.hazmat.primitives.asymmetric import x25519
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cotune.chain import Chain, Contracts, RevertError
from cotune.chain.transactions import guard_call
from cotune.crypto.hpke import HpkePrivateKey, HpkePublicKey, HpkeSuite, seal

P = 2**255 - 19
SMALL_ORDER_U = (
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P - 1,
    P,
    P + 1,
)
SMALL_ORDER = [(u | top).to_bytes(32, "little") for u in SMALL_ORDER_U for top in (0, 1 << 255)]
"""Every encoding the contract refuses: the seven u-coordinates, with and without the top
bit (X25519 ignores it)."""
X25519 = b"\x00\x20"
MLKEM = b"\x64\x7a"
MLKEM_KEY_BYTES = 1184
Q = 3329


def mlkem_part(secret: bytes | None = None) -> bytes:
    """The ML-KEM-768 encapsulation key of a hybrid key (from ``secret``, 96 bytes, or fresh)."""
    suite = HpkeSuite.MLKEM768_X25519
    private = HpkePrivateKey.generate(suite) if secret is None else HpkePrivateKey(suite, secret)
    return private.public_key().raw[:MLKEM_KEY_BYTES]


def set_coefficient(encoded: bytes, index: int, value: int) -> bytes:
    """``encoded`` (an ML-KEM-768 encapsulation key) with coefficient ``index`` = ``value``."""
    key = bytearray(encoded)
    at = 3 * (index // 2)
    b0, b1, b2 = key[at : at + 3]
    if index % 2 == 0:
        b0, b1 = value & 0xFF, (b1 & 0xF0) | (value >> 8)
    else:
        b1, b2 = (b1 & 0x0F) | ((value & 0x0F) << 4), value >> 4
    key[at : at + 3] = bytes((b0, b1, b2))
    return bytes(key)


def python_accepts(key: bytes) -> bool:
    """Whether cotune's crypto parses ``key`` and can seal to it."""
    try:
        seal(bytes(32), HpkePublicKey.from_bytes(key), b"cotune key check")
    except ValueError:
        return False
    return True


def submit_call(chain: Chain, contracts: Contracts, session_id: int) -> Callable[[bytes], None]:
    """Dry-run ``submit`` with a key (no state changes): raises ``RevertError`` on refusal."""
    account = chain.dev_accounts[1]
    coordinator = contracts.coordinator

    def call(key: bytes) -> None:
        bound = coordinator.contract.functions.submit(session_id, b"\x01" * 32, key)
        guard_call(
            chain.decoder,
            "Coordinator",
            "submit",
            lambda: bound.call({"from": account.address, "value": 0}),
        )

    return call


@pytest.fixture
def try_key(chain: Chain, contracts: Contracts, enclave: Enclave) -> Callable[[bytes], None]:
    """Submit a key to an open session with no minimum stake, as a dry run."""
    session_id = contracts.coordinator.create_session(session_params(chain, enclave, min_stake=0))
    return submit_call(chain, contracts, session_id)


def test_small_order_points_share_no_secret() -> None:
    """Each refused encoding makes X25519 fail: the shared secret would be all zero."""
    assert len(set(SMALL_ORDER)) == 14
    private = x25519.X25519PrivateKey.generate()
    for u in SMALL_ORDER:
        public = x25519.X25519PublicKey.from_public_bytes(u)
        try:
            secret = private.exchange(public)
        except ValueError:  # OpenSSL refuses an all-zero shared secret
            continue
        assert secret == bytes(32), u.hex()
        assert not python_accepts(X25519 + u)


def test_submit_refuses_small_order_x25519_parts(try_key: Callable[[bytes], None]) -> None:
    ml = mlkem_part()
    for u in SMALL_ORDER:
        for key in (X25519 + u, MLKEM + ml + u):
            with pytest.raises(RevertError) as info:
                try_key(key)
            assert (info.value.error, info.value.args_by_name) == ("SmallOrderX25519Key", {"u": u})
            assert str(info.value) == (
                f"Coordinator.submit: the X25519 part of the HPKE key (0x{u.hex()}) is a point "
                "of small order: no secret can be shared with it"
            )
    # the same u-coordinates one off, and non-canonical encodings of ordinary points, pass
    for u in (2, P - 2, P + 2, P + 18, 2**255 - 1):
        try_key(X25519 + u.to_bytes(32, "little"))


def test_submit_refuses_unknown_kems_and_wrong_lengths(try_key: Callable[[bytes], None]) -> None:
    good_x, good_ml = HpkePrivateKey.generate().public_key().raw, mlkem_part()
    cases = [
        b"",
        b"\x00",
        X25519,
        X25519 + good_x[:31],
        X25519 + good_x + b"\x00",
        MLKEM + good_ml + good_x[:31],
        MLKEM + good_x,  # an X25519 key under the hybrid's KEM id
        X25519 + good_ml + good_x,  # a hybrid key under X25519's KEM id
        b"\x00\x21" + good_x,  # DHKEM(X448)'s id with an X25519-sized key
        b"\x00\x10" + good_x,
    ]
    for key in cases:
        kem_id = key[:2] if len(key) >= 2 else bytes(2)
        with pytest.raises(RevertError) as info:
            try_key(key)
        assert (info.value.error, info.value.args_by_name) == (
            "InvalidHpkeKey",
            {"kemId": kem_id, "length": len(key)},
        ), key[:4].hex()
        assert not python_accepts(key)
    try_key(X25519 + good_x)
    try_key(MLKEM + good_ml + good_x)


@pytest.mark.parametrize("index", [0, 1, 2, 3, 511, 766, 767])
def test_submit_refuses_an_unreduced_mlkem_coefficient(
    try_key: Callable[[bytes], None], index: int
) -> None:
    ml, classic = mlkem_part(), HpkePrivateKey.generate().public_key().raw
    for value in (Q, 4095):
        bad = set_coefficient(ml, index, value)
        assert not python_accepts(MLKEM + bad + classic)
        assert expect_revert("InvalidMlKemKey", lambda bad=bad: try_key(MLKEM + bad + classic)) == {
            "index": index
        }
    edge = set_coefficient(ml, index, Q - 1)
    assert python_accepts(MLKEM + edge + classic)
    try_key(MLKEM + edge + classic)


def test_registry_refuses_what_submit_refuses(
    chain: Chain, contracts: Contracts, deployer: LocalAccount
) -> None:
    registry, verifier = contracts.registry, contracts.verifier
    signer, measurement = chain.dev_accounts[3].address, os.urandom(32)
    ml = set_coefficient(mlkem_part(), 5, Q)
    for key, error in (
        (b"\x00\x20" + bytes(32), "SmallOrderX25519Key"),
        (MLKEM + ml + os.urandom(32), "InvalidMlKemKey"),
        (b"\x00\x20" + os.urandom(31), "InvalidHpkeKey"),
    ):
        evidence = verifier.attest(deployer, signer, key, measurement)
        assert verifier.verify(signer, key, measurement, evidence)  # the statement is fine
        with pytest.raises(RevertError) as info:
            registry.register(signer, key, measurement, verifier.address, evidence)
        assert (info.value.contract, info.value.error) == ("EnclaveRegistry", error)
    assert registry.count() == 0


def _keys() -> st.SearchStrategy[bytes]:
    """Random bytes, keys of the right shapes, and real keys with one thing changed."""
    x_raw = st.binary(min_size=32, max_size=32)
    small = st.sampled_from(SMALL_ORDER)
    classic = st.one_of(x_raw, small)
    real_ml = st.builds(mlkem_part, st.binary(min_size=96, max_size=96))
    mutated_ml = st.builds(set_coefficient, real_ml, st.integers(0, 767), st.integers(0, 4095))
    kem = st.one_of(st.sampled_from([X25519, MLKEM]), st.binary(min_size=2, max_size=2))
    return st.one_of(
        st.binary(max_size=40),
        st.builds(lambda k, x: k + x, kem, classic),
        st.builds(lambda k, m, x: k + m + x, kem, st.one_of(real_ml, mutated_ml), classic),
        st.builds(lambda m, x: MLKEM + m + x, st.binary(min_size=1184, max_size=1184), x_raw),
        st.builds(
            lambda k, cut: k[:cut],
            st.builds(lambda m, x: MLKEM + m + x, real_ml, x_raw),
            st.integers(0, 1218),
        ),
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=_keys())
def test_chain_and_python_agree_on_every_key(try_key: Callable[[bytes], None], key: bytes) -> None:
    try:
        try_key(key)
        on_chain, outcome = True, "accepted"
    except RevertError as exc:
        assert exc.error in {"InvalidHpkeKey", "SmallOrderX25519Key", "InvalidMlKemKey"}
        on_chain, outcome = False, exc.error
    event(outcome)
    assert on_chain == python_accepts(key), key[:2].hex() + f" ({len(key)} bytes)"
