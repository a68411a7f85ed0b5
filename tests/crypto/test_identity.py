"""Public identities: what participants exchange, parsed strictly."""

import json

import pytest

from cotune.crypto import HpkeSuite, Identity, PublicIdentity


@pytest.mark.parametrize("suite", list(HpkeSuite), ids=lambda s: s.value)
def test_public_identity_round_trip(suite: HpkeSuite) -> None:
    public = Identity.generate(suite).public()
    assert PublicIdentity.from_json(json.dumps(public.to_dict())) == public
    assert public.to_dict()["hpke_suite"] == suite.value


def test_lowercase_address_is_checksummed() -> None:
    public = Identity.generate().public()
    data = public.to_dict() | {"address": public.address.lower()}
    assert PublicIdentity.from_dict(data).address == public.address


def test_errors() -> None:
    public = Identity.generate().public().to_dict()
    with pytest.raises(ValueError, match="missing field 'hpke_public_key'"):
        PublicIdentity.from_dict({"address": public["address"]})
    with pytest.raises(ValueError, match="hpke_suite"):
        PublicIdentity.from_dict(public | {"hpke_suite": "mlkem768-x25519"})
    with pytest.raises(ValueError, match="JSON object"):
        PublicIdentity.from_json("[1]")
    with pytest.raises(ValueError):
        PublicIdentity.from_dict(public | {"address": "0x123"})


def test_repr_has_no_secret() -> None:
    identity = Identity.generate()
    assert identity.account.key.hex().removeprefix("0x") not in repr(identity)
