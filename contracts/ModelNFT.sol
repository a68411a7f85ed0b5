// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EnclaveRegistry} from "./EnclaveRegistry.sol";

/// @title ModelNFT
/// @notice One token per accepted contributor per session (the ERC-7857 shape): a token
/// names the encrypted model and its manifest; the model key sealed to the holder is
/// published in `PublishedSealedKey`, not stored. Ownership moves only with access:
/// `iTransferFrom` needs the session enclave's statement that it re-sealed the key to the
/// receiver, and refuses once the registry has revoked that enclave; plain ERC-721
/// transfers are disabled.
contract ModelNFT is ERC721, EIP712 {
    struct ModelRecord {
        bytes32 modelHash;
        bytes32 manifestHash;
        uint256 enclaveId;
        uint32 tokenCount;
    }

    bytes32 public constant RESEAL_TYPEHASH = keccak256(
        "ResealStatement(uint256 tokenId,address from,address to,bytes32 sealedKeyHash,uint256 transferNonce)"
    );

    address public immutable deployer;
    /// @notice Where a session's enclave is looked up (signer, revocation) at each transfer.
    EnclaveRegistry public immutable registry;
    address public minter;
    mapping(uint256 sessionId => ModelRecord) private _models;
    mapping(uint256 tokenId => uint256) public transferNonce;

    event MinterSet(address indexed minter);
    event ModelRecorded(
        uint256 indexed sessionId, uint256 indexed enclaveId, bytes32 modelHash, bytes32 manifestHash
    );
    event PublishedSealedKey(uint256 indexed tokenId, address indexed holder, bytes sealedKey);

    error NotDeployer();
    error MinterAlreadySet();
    error NotMinter(address caller);
    error ModelAlreadyRecorded(uint256 sessionId);
    error LengthMismatch();
    error UseITransferFrom();
    error InvalidResealProof(address recovered, address expected);
    error EmptySealedKey();
    /// @notice The enclave of the token's session has been revoked: it vouches for no transfer.
    /// @param enclaveId the revoked enclave
    error EnclaveRevoked(uint256 enclaveId);

    constructor(EnclaveRegistry registry_) ERC721("cotune model", "COTUNE") EIP712("cotune ModelNFT", "1") {
        deployer = msg.sender;
        registry = registry_;
    }

    /// @notice Name the one contract allowed to mint (the Coordinator); settable once.
    function setMinter(address minter_) external {
        if (msg.sender != deployer) revert NotDeployer();
        if (minter != address(0)) revert MinterAlreadySet();
        minter = minter_;
        emit MinterSet(minter_);
    }

    /// @notice Token id of the `index`-th accepted contributor of `sessionId`.
    function tokenIdFor(uint256 sessionId, uint256 index) public pure returns (uint256) {
        return (sessionId << 32) | index;
    }

    /// @notice Session a token belongs to.
    function sessionOf(uint256 tokenId) public pure returns (uint256) {
        return tokenId >> 32;
    }

    /// @notice Mint one token per holder for a finalized session of enclave `enclaveId`
    /// (a registered enclave, hence not 0), publishing each sealed key.
    function mintSession(
        uint256 sessionId,
        uint256 enclaveId,
        bytes32 modelHash,
        bytes32 manifestHash,
        address[] calldata holders,
        bytes[] calldata sealedKeys
    ) external {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        if (holders.length != sealedKeys.length) revert LengthMismatch();
        ModelRecord storage record = _models[sessionId];
        if (record.enclaveId != 0) revert ModelAlreadyRecorded(sessionId);
        _models[sessionId] = ModelRecord(modelHash, manifestHash, enclaveId, uint32(holders.length));
        emit ModelRecorded(sessionId, enclaveId, modelHash, manifestHash);
        for (uint256 i = 0; i < holders.length; ++i) {
            uint256 tokenId = tokenIdFor(sessionId, i);
            _mint(holders[i], tokenId);
            emit PublishedSealedKey(tokenId, holders[i], sealedKeys[i]);
        }
    }

    /// @notice The encrypted model, manifest and enclave behind a token.
    function tokenModel(uint256 tokenId) external view returns (ModelRecord memory) {
        _requireOwned(tokenId);
        return _models[sessionOf(tokenId)];
    }

    /// @notice The model recorded for a session (zero fields when none).
    function sessionModel(uint256 sessionId) external view returns (ModelRecord memory) {
        return _models[sessionId];
    }

    /// @notice The digest the session enclave signs when it re-seals a token's key.
    function resealDigest(uint256 tokenId, address from, address to, bytes calldata sealedKeyForReceiver)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    RESEAL_TYPEHASH, tokenId, from, to, keccak256(sealedKeyForReceiver), transferNonce[tokenId]
                )
            )
        );
    }

    /// @notice Transfer a token with its access: `proof` is the session enclave's EIP-712
    /// signature that `sealedKeyForReceiver` seals the model key to the receiver. The
    /// enclave must not be revoked: a revoked enclave's keys may be in anyone's hands.
    function iTransferFrom(
        address from,
        address to,
        uint256 tokenId,
        bytes calldata sealedKeyForReceiver,
        bytes calldata proof
    ) external {
        if (to == address(0)) revert ERC721InvalidReceiver(address(0));
        if (sealedKeyForReceiver.length == 0) revert EmptySealedKey();
        uint256 enclaveId = _models[sessionOf(tokenId)].enclaveId;
        if (enclaveId == 0) revert ERC721NonexistentToken(tokenId);
        (address expected,, bool revoked) = registry.signerOf(enclaveId);
        if (revoked) revert EnclaveRevoked(enclaveId);
        (address recovered, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(resealDigest(tokenId, from, to, sealedKeyForReceiver), proof);
        if (err != ECDSA.RecoverError.NoError || recovered != expected) {
            revert InvalidResealProof(recovered, expected);
        }
        ++transferNonce[tokenId];
        address previousOwner = _update(to, tokenId, _msgSender());
        if (previousOwner != from) revert ERC721IncorrectOwner(from, tokenId, previousOwner);
        emit PublishedSealedKey(tokenId, to, sealedKeyForReceiver);
    }

    /// @dev Plain transfers would move ownership without access to the model.
    function transferFrom(address, address, uint256) public pure override {
        revert UseITransferFrom();
    }
}
