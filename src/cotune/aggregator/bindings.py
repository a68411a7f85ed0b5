"""HPKE ``info`` strings: what binds each ciphertext to one chain, contract, session and party.

Anything encrypted to the enclave or sealed to a contributor is opened only under the
same context, so a ciphertext replayed into another session or under another address
fails to decrypt (``ContextMismatchError``).
"""

from __future__ import annotations

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
