// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IAttestationVerifier} from "./IAttestationVerifier.sol";

/// @title DevAttestationVerifier
/// @notice Accepts an EIP-712 statement signed by a configured dev-authority key.
/// It gives NO hardware guarantee: whoever holds the dev key can vouch for any process.
/// A statement is fresh: it names the moment it expires (`validUntil`, a block timestamp)
/// and a random nonce, so each one is distinct and the registry admits it at most once.
/// Evidence is `validUntil` (8 bytes, big endian) || `nonce` (32) || signature (65).
contract DevAttestationVerifier is IAttestationVerifier, EIP712 {
    bytes32 public constant STATEMENT_TYPEHASH = keccak256(
        "EnclaveStatement(address signer,bytes32 hpkeKeyHash,bytes32 measurement,uint64 validUntil,bytes32 nonce)"
    );
    /// @notice Length of the evidence: validUntil (8) + nonce (32) + signature (65).
    uint256 public constant EVIDENCE_LENGTH = 8 + 32 + 65;

    address public immutable authority;

    error ZeroAuthority();

    constructor(address authority_) EIP712("cotune DevAttestationVerifier", "1") {
        if (authority_ == address(0)) revert ZeroAuthority();
        authority = authority_;
    }

    /// @notice The digest the dev authority signs for one enclave.
    function statementDigest(
        address signer,
        bytes calldata hpkePublicKey,
        bytes32 measurement,
        uint64 validUntil,
        bytes32 nonce
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(STATEMENT_TYPEHASH, signer, keccak256(hpkePublicKey), measurement, validUntil, nonce)
            )
        );
    }

    /// @inheritdoc IAttestationVerifier
    /// @dev False for malformed evidence, an expired statement (block.timestamp past
    /// `validUntil`) and a signature that is not the authority's.
    function verify(address signer, bytes calldata hpkePublicKey, bytes32 measurement, bytes calldata evidence)
        external
        view
        returns (bool)
    {
        if (evidence.length != EVIDENCE_LENGTH) return false;
        uint64 validUntil = uint64(bytes8(evidence[:8]));
        if (block.timestamp > validUntil) return false;
        bytes32 digest = statementDigest(signer, hpkePublicKey, measurement, validUntil, bytes32(evidence[8:40]));
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, evidence[40:]);
        return err == ECDSA.RecoverError.NoError && recovered == authority;
    }

    /// @inheritdoc IAttestationVerifier
    function kind() external pure returns (string memory) {
        return "dev";
    }
}
