// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {HpkeKeys} from "./HpkeKeys.sol";
import {IAttestationVerifier} from "./IAttestationVerifier.sol";

/// @title EnclaveRegistry
/// @notice Records enclaves whose attestation an admin-approved verifier accepted.
/// Anyone may register (the evidence is the proof); only the admin revokes. Revoking an
/// enclave revokes its keys for good: its signer address and its HPKE key never register
/// again, and every record holding either counts as revoked. Each piece of evidence
/// registers at most once.
contract EnclaveRegistry is Ownable {
    struct Enclave {
        address signer;
        IAttestationVerifier verifier;
        uint64 registeredAt;
        bytes32 measurement;
        bytes32 hpkeKeyHash;
        bytes hpkePublicKey;
        bytes evidence;
    }

    uint256 public enclaveCount;
    mapping(uint256 enclaveId => Enclave) private _enclaves;
    mapping(address verifier => bool) public approvedVerifier;
    /// @notice Signer addresses of revoked enclaves: never registered again.
    mapping(address signer => bool) public isSignerRevoked;
    /// @notice keccak256 of revoked enclaves' HPKE public keys: never registered again.
    mapping(bytes32 hpkeKeyHash => bool) public isHpkeKeyRevoked;
    /// @notice keccak256 of every evidence that registered an enclave.
    mapping(bytes32 evidenceHash => bool) public isEvidenceUsed;

    event VerifierApproved(address indexed verifier, bool approved);
    event EnclaveRegistered(
        uint256 indexed enclaveId,
        address indexed signer,
        address indexed verifier,
        bytes32 measurement,
        bytes hpkePublicKey
    );
    event EnclaveRevoked(uint256 indexed enclaveId, address indexed signer, bytes32 hpkeKeyHash);

    error VerifierNotApproved(address verifier);
    error AttestationRejected(address verifier);
    error ZeroSigner();
    error UnknownEnclave(uint256 enclaveId);
    error AlreadyRevoked(uint256 enclaveId);
    /// @notice The signer belonged to a revoked enclave.
    /// @param signer the refused signer address
    error SignerRevoked(address signer);
    /// @notice The HPKE public key belonged to a revoked enclave.
    /// @param hpkeKeyHash keccak256 of the refused key
    error HpkeKeyRevoked(bytes32 hpkeKeyHash);
    /// @notice This evidence already registered an enclave; fresh evidence is needed.
    /// @param evidenceHash keccak256 of the evidence
    error EvidenceReused(bytes32 evidenceHash);

    constructor(address admin) Ownable(admin) {}

    /// @notice Let `verifier` admit enclaves (or stop it admitting new ones).
    function setVerifier(address verifier, bool approved) external onlyOwner {
        approvedVerifier[verifier] = approved;
        emit VerifierApproved(verifier, approved);
    }

    /// @notice Register an enclave; `evidence` must satisfy the approved `verifier`, must
    /// not have registered before, and neither the signer nor the HPKE key (which must be
    /// well formed, see `HpkeKeys`) may belong to a revoked enclave.
    function register(
        address signer,
        bytes calldata hpkePublicKey,
        bytes32 measurement,
        IAttestationVerifier verifier,
        bytes calldata evidence
    ) external returns (uint256 enclaveId) {
        if (signer == address(0)) revert ZeroSigner();
        HpkeKeys.check(hpkePublicKey);
        bytes32 hpkeKeyHash = keccak256(hpkePublicKey);
        if (isSignerRevoked[signer]) revert SignerRevoked(signer);
        if (isHpkeKeyRevoked[hpkeKeyHash]) revert HpkeKeyRevoked(hpkeKeyHash);
        if (!approvedVerifier[address(verifier)]) revert VerifierNotApproved(address(verifier));
        bytes32 evidenceHash = keccak256(evidence);
        if (isEvidenceUsed[evidenceHash]) revert EvidenceReused(evidenceHash);
        if (!verifier.verify(signer, hpkePublicKey, measurement, evidence)) {
            revert AttestationRejected(address(verifier));
        }
        isEvidenceUsed[evidenceHash] = true;
        enclaveId = ++enclaveCount;
        _enclaves[enclaveId] = Enclave({
            signer: signer,
            verifier: verifier,
            registeredAt: uint64(block.timestamp),
            measurement: measurement,
            hpkeKeyHash: hpkeKeyHash,
            hpkePublicKey: hpkePublicKey,
            evidence: evidence
        });
        emit EnclaveRegistered(enclaveId, signer, address(verifier), measurement, hpkePublicKey);
    }

    /// @notice Revoke an enclave and its keys: its sessions (and those of any record with
    /// the same signer or HPKE key) can no longer finalize, slash or move model tokens, and
    /// its signer and HPKE key can never register again.
    function revoke(uint256 enclaveId) external onlyOwner {
        Enclave storage enclave = _get(enclaveId);
        if (_revoked(enclave)) revert AlreadyRevoked(enclaveId);
        isSignerRevoked[enclave.signer] = true;
        isHpkeKeyRevoked[enclave.hpkeKeyHash] = true;
        emit EnclaveRevoked(enclaveId, enclave.signer, enclave.hpkeKeyHash);
    }

    /// @notice The full record of an enclave, and whether it is revoked.
    function getEnclave(uint256 enclaveId) external view returns (Enclave memory enclave, bool revoked) {
        Enclave storage stored = _get(enclaveId);
        return (stored, _revoked(stored));
    }

    /// @notice Signer and measurement of an enclave, and whether it is revoked; reverts when
    /// unknown.
    function signerOf(uint256 enclaveId) external view returns (address signer, bytes32 measurement, bool revoked) {
        Enclave storage enclave = _get(enclaveId);
        return (enclave.signer, enclave.measurement, _revoked(enclave));
    }

    function _get(uint256 enclaveId) private view returns (Enclave storage enclave) {
        enclave = _enclaves[enclaveId];
        if (enclave.signer == address(0)) revert UnknownEnclave(enclaveId);
    }

    function _revoked(Enclave storage enclave) private view returns (bool) {
        return isSignerRevoked[enclave.signer] || isHpkeKeyRevoked[enclave.hpkeKeyHash];
    }
}
