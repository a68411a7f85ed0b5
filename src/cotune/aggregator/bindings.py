"""HPKE ``info`` strings: what binds each ciphertext to one chain, contract, session and party.

Anything encrypted to the enclave or sealed to a contributor is opened only under the
same context, so a ciphertext replayed into another session or under another address
fails to decrypt (``ContextMismatchError``).

Also the salted commitments that public reports carry instead of a dataset's hash.
"""

from __future__ import annotations

import hashlib
import hmac

from eth_utils.address import to_checksum_address


def _context(kind: str, chain_id: int, coordinator: str, **parts: object) -> bytes:
    fields = [f"cotune/{kind}/v1", f"chain={chain_id}", f"coordinator={_addr(coordinator)}"]
    fields += [f"{k}={_addr(v) if k in ('contributor', 'owner') else v}" for k, v in parts.items()]
    return "|".join(fields).encode()


def _addr(value: object) -> str:
    return str(to_checksum_address(str(value)))


def submission_info(chain_id: int, coordinator: str, session_id: int, contributor: str) -> bytes:
    """Context of a contributor's dataset ciphertext (encrypted to the enclave)."""
    return _context(
        "submission", chain_id, coordinator, session=session_id, contributor=contributor
    )


def eval_set_info(chain_id: int, coordinator: str, owner: str) -> bytes:
    """Context of an owner's eval-set ciphertext.

    It is encrypted before the session exists, so it names the owner, not the session.
    """
    return _context("eval-set", chain_id, coordinator, owner=owner)


def model_info(chain_id: int, coordinator: str, session_id: int) -> bytes:
    """Context of the adapter ciphertext (encrypted once, to the session's model key)."""
    return _context("model", chain_id, coordinator, session=session_id)


def model_key_info(chain_id: int, coordinator: str, session_id: int, contributor: str) -> bytes:
    """Context of the model key sealed to one accepted contributor."""
    return _context("model-key", chain_id, coordinator, session=session_id, contributor=contributor)


def commitment_salt_info(
    chain_id: int, coordinator: str, session_id: int, contributor: str
) -> bytes:
    """Context a commitment salt is derived under (from the contributor's or enclave's key)."""
    return _context(
        "commitment-salt", chain_id, coordinator, session=session_id, contributor=contributor
    )


def probe_seed_info(
    chain_id: int, coordinator: str, session_id: int, rules_seed: int, commitments: list[str]
) -> bytes:
    """Context the enclave derives its gate's probe-sample seed under.

    It names every contribution by its salted commitment, so the seed changes with any of
    them; derived from the enclave's secret, it confirms nothing about anyone's data.
    """
    return _context(
        "probe-seed",
        chain_id,
        coordinator,
        session=session_id,
        rules_seed=rules_seed,
        data=",".join(sorted(commitments)),
    )


def derive_salt(secret: bytes, info: bytes) -> bytes:
    """A 32-byte salt only the holder of ``secret`` can recompute (HMAC-SHA256)."""
    return hmac.new(secret, info, hashlib.sha256).digest()


def dataset_commitment(salt: bytes, data: bytes) -> str:
    """What a public report says of a contribution's data: SHA-256 over a salt and the data.

    Without the salt nobody can test a guessed dataset against it; the contributor, who
    derived the salt from its own key, can check that the enclave trained on its bytes.
    """
    return hashlib.sha256(b"cotune/dataset-commitment/v1|" + salt + data).hexdigest()
