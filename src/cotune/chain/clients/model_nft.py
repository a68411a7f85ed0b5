"""Typed client of ``ModelNFT``: model tokens, their records and access-carrying transfers."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from cotune.chain.clients.base import ContractClient
from cotune.chain.events import PublishedSealedKey
from cotune.chain.statements import model_nft_domain, sign_reseal_statement
from cotune.chain.transactions import TxResult
from cotune.crypto.eip712 import Eip712Domain


@dataclass(frozen=True)
class ModelRecord:
    """The encrypted model a session's tokens stand for, and the enclave that re-seals it.

    ``enclave_id`` is 0 when the session has no model.
    """

    model_hash: bytes
    manifest_hash: bytes
    enclave_id: int
    token_count: int


class ModelNftClient(ContractClient):
    """Read model tokens and move them together with access (ERC-7857 ``iTransferFrom``)."""

    CONTRACT = "ModelNFT"

    def domain(self) -> Eip712Domain:
        """The EIP-712 domain of re-seal statements for this contract."""
        return model_nft_domain(self.chain.chain_id, self.address)

    def token_id_for(self, session_id: int, index: int) -> int:
        """Token id of the ``index``-th accepted contributor of a session."""
        return (session_id << 32) | index

    def owner_of(self, token_id: int) -> str:
        """The holder of a token."""
        return str(self._call("ownerOf", token_id))

    def balance_of(self, holder: str) -> int:
        """How many model tokens ``holder`` has."""
        return int(self._call("balanceOf", holder))

    def minter(self) -> str:
        """The only address allowed to mint (the Coordinator)."""
        return str(self._call("minter"))

    def set_minter(self, minter: str) -> TxResult:
        """Name the minter once (deployer only)."""
        return self._send("setMinter", minter)

    def transfer_nonce(self, token_id: int) -> int:
        """How many times the token has moved: part of each re-seal statement."""
        return int(self._call("transferNonce", token_id))

    def token_model(self, token_id: int) -> ModelRecord:
        """The model record behind a token."""
        return _record(self._call("tokenModel", token_id))

    def session_model(self, session_id: int) -> ModelRecord:
        """The model recorded for a session (zeroes when none)."""
        return _record(self._call("sessionModel", session_id))

    def sign_reseal(
        self,
        enclave_signer: LocalAccount,
        *,
        token_id: int,
        sender: str,
        receiver: str,
        sealed_key: bytes,
    ) -> bytes:
        """The enclave's proof for ``i_transfer_from`` (signs the current transfer nonce)."""
        return sign_reseal_statement(
            enclave_signer,
            self.domain(),
            token_id=token_id,
            sender=sender,
            receiver=receiver,
            sealed_key=sealed_key,
            transfer_nonce=self.transfer_nonce(token_id),
        )

    def i_transfer_from(
        self, sender: str, receiver: str, token_id: int, sealed_key: bytes, proof: bytes
    ) -> TxResult:
        """Move a token with a model key re-sealed to the receiver."""
        return self._send("iTransferFrom", sender, receiver, token_id, sealed_key, proof)

    def sealed_key_events(self, token_id: int, from_block: int = 0) -> list[PublishedSealedKey]:
        """Every sealed key published for a token, oldest first (the last is the holder's)."""
        return self._events(PublishedSealedKey, token_id, from_block)


def _record(raw: tuple[bytes, bytes, int, int]) -> ModelRecord:
    model_hash, manifest_hash, enclave_id, token_count = raw
    return ModelRecord(bytes(model_hash), bytes(manifest_hash), int(enclave_id), int(token_count))
