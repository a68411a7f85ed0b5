// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IAttestationVerifier} from "./IAttestationVerifier.sol";

/// @title EnclaveRegistry
/// @notice Records enclaves whose attestation an admin-approved verifier accepted.
/// Anyone may register (the evidence is the proof); only the admin revokes.
contract EnclaveRegistry is Ownable {
    struct Enclave {
        address signer;
        IAttestationVerifier verifier;
        uint64 registeredAt;
        bool revoked;
        bytes32 measurement;
        bytes hpkePublicKey;
        bytes evidence;
    }

    uint256 public enclaveCount;
    mapping(uint256 enclaveId => Enclave) private _enclaves;
    mapping(address verifier => bool) public approvedVerifier;

    event VerifierApproved(address indexed verifier, bool approved);
    event EnclaveRegistered(
        uint256 indexed enclaveId,
        address indexed signer,
        address indexed verifier,
        bytes32 measurement,
        bytes hpkePublicKey
    );
    event EnclaveRevoked(uint256 indexed enclaveId);

    error VerifierNotApproved(address verifier);
    error AttestationRejected(address verifier);
    error ZeroSigner();
    error EmptyHpkeKey();
    error UnknownEnclave(uint256 enclaveId);
    error AlreadyRevoked(uint256 enclaveId);

    constructor(address admin) Ownable(admin) {}

    /// @notice Let `verifier` admit enclaves (or stop it admitting new ones).
    function setVerifier(address verifier, bool approved) external onlyOwner {
        approvedVerifier[verifier] = approved;
        emit VerifierApproved(verifier, approved);
    }

    /// @notice Register an enclave; `evidence` must satisfy the approved `verifier`.
    function register(
        address signer,
        bytes calldata hpkePublicKey,
        bytes32 measurement,
        IAttestationVerifier verifier,
        bytes calldata evidence
    ) external returns (uint256 enclaveId) {
        if (signer == address(0)) revert ZeroSigner();
        if (hpkePublicKey.length == 0) revert EmptyHpkeKey();
        if (!approvedVerifier[address(verifier)]) revert VerifierNotApproved(address(verifier));
        if (!verifier.verify(signer, hpkePublicKey, measurement, evidence)) {
            revert AttestationRejected(address(verifier));
        }
        enclaveId = ++enclaveCount;
        _enclaves[enclaveId] = Enclave({
            signer: signer,
            verifier: verifier,
            registeredAt: uint64(block.timestamp),
            revoked: false,
            measurement: measurement,
            hpkePublicKey: hpkePublicKey,
            evidence: evidence
        });
        emit EnclaveRegistered(enclaveId, signer, address(verifier), measurement, hpkePublicKey);
    }

    /// @notice Revoke an enclave: its sessions can no longer finalize or slash.
    function revoke(uint256 enclaveId) external onlyOwner {
        Enclave storage enclave = _get(enclaveId);
        if (enclave.revoked) revert AlreadyRevoked(enclaveId);
        enclave.revoked = true;
        emit EnclaveRevoked(enclaveId);
    }

    /// @notice The full record of an enclave.
    function getEnclave(uint256 enclaveId) external view returns (Enclave memory) {
        return _get(enclaveId);
    }

    /// @notice Signer and measurement of a live enclave; reverts when unknown.
    function signerOf(uint256 enclaveId) external view returns (address signer, bytes32 measurement, bool revoked) {
        Enclave storage enclave = _get(enclaveId);
        return (enclave.signer, enclave.measurement, enclave.revoked);
    }

    function _get(uint256 enclaveId) private view returns (Enclave storage enclave) {
        enclave = _enclaves[enclaveId];
        if (enclave.signer == address(0)) revert UnknownEnclave(enclaveId);
    }
}
