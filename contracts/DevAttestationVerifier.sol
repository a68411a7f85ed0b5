// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IAttestationVerifier} from "./IAttestationVerifier.sol";

/// @title DevAttestationVerifier
/// @notice Accepts an EIP-712 statement signed by a configured dev-authority key.
/// It gives NO hardware guarantee: whoever holds the dev key can vouch for any process.
contract DevAttestationVerifier is IAttestationVerifier, EIP712 {
    bytes32 public constant STATEMENT_TYPEHASH =
        keccak256("EnclaveStatement(address signer,bytes32 hpkeKeyHash,bytes32 measurement)");

    address public immutable authority;

    error ZeroAuthority();

    constructor(address authority_) EIP712("cotune DevAttestationVerifier", "1") {
        if (authority_ == address(0)) revert ZeroAuthority();
        authority = authority_;
    }

    /// @notice The digest the dev authority signs for one enclave.
    function statementDigest(address signer, bytes calldata hpkePublicKey, bytes32 measurement)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(STATEMENT_TYPEHASH, signer, keccak256(hpkePublicKey), measurement))
        );
    }

    /// @inheritdoc IAttestationVerifier
    function verify(address signer, bytes calldata hpkePublicKey, bytes32 measurement, bytes calldata evidence)
        external
        view
        returns (bool)
    {
        (address recovered, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(statementDigest(signer, hpkePublicKey, measurement), evidence);
        return err == ECDSA.RecoverError.NoError && recovered == authority;
    }

    /// @inheritdoc IAttestationVerifier
    function kind() external pure returns (string memory) {
        return "dev";
    }
}
