// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title DatasetMarket
/// @notice Sells access to signed dataset versions. A dataset is named by its publisher
/// (the key that signs its version log) together with its id, so only that key can list
/// it. Each listed version pins the EIP-712 hash of its signed log entry, forever: a price
/// buys exactly that content. `buy` records a receipt that the dataset's server checks
/// before it mints the buyer a download token. Proceeds are withdrawn by the publisher.
contract DatasetMarket is ReentrancyGuard {
    struct Listing {
        bytes32 entryHash;
        uint256 price;
        bool active;
    }

    mapping(bytes32 datasetKey => mapping(uint64 version => Listing)) private _listings;
    mapping(bytes32 datasetKey => mapping(uint64 version => mapping(address buyer => uint256)))
        private _receipts;
    mapping(bytes32 datasetKey => address) public publisherOf;
    mapping(address publisher => uint256) public proceeds;
    uint256 public receiptCount;

    event Listed(
        bytes32 indexed datasetKey,
        address indexed publisher,
        string datasetId,
        uint64 version,
        bytes32 entryHash,
        uint256 price
    );
    event Delisted(bytes32 indexed datasetKey, uint64 version);
    event Purchased(
        uint256 indexed receiptId,
        bytes32 indexed datasetKey,
        address indexed buyer,
        uint64 version,
        bytes32 entryHash,
        uint256 price
    );
    event Withdrawn(address indexed publisher, uint256 amount);

    error ZeroPrice();
    error EmptyEntryHash();
    error EntryHashPinned(bytes32 pinned, bytes32 given);
    error NotListed(bytes32 datasetKey, uint64 version);
    error WrongPayment(uint256 sent, uint256 price);
    error AlreadyPurchased(address buyer, uint64 version, uint256 receiptId);
    error NothingToWithdraw(address account);
    error TransferFailed(address to, uint256 amount);

    /// @notice The key a dataset's listings live under: its publisher and its id.
    function datasetKey(address publisher, string calldata datasetId) public pure returns (bytes32) {
        return keccak256(abi.encode(publisher, keccak256(bytes(datasetId))));
    }

    /// @notice List (or re-price) a version of the caller's dataset. The first listing of a
    /// version pins its entry hash; later calls must repeat it.
    function list(string calldata datasetId, uint64 version, bytes32 entryHash, uint256 price)
        external
    {
        if (price == 0) revert ZeroPrice();
        if (entryHash == bytes32(0)) revert EmptyEntryHash();
        bytes32 key = datasetKey(msg.sender, datasetId);
        Listing storage listing = _listings[key][version];
        if (listing.entryHash != bytes32(0) && listing.entryHash != entryHash) {
            revert EntryHashPinned(listing.entryHash, entryHash);
        }
        publisherOf[key] = msg.sender;
        listing.entryHash = entryHash;
        listing.price = price;
        listing.active = true;
        emit Listed(key, msg.sender, datasetId, version, entryHash, price);
    }

    /// @notice Stop selling a version (receipts already issued stay valid).
    function delist(string calldata datasetId, uint64 version) external {
        bytes32 key = datasetKey(msg.sender, datasetId);
        Listing storage listing = _listings[key][version];
        if (!listing.active) revert NotListed(key, version);
        listing.active = false;
        emit Delisted(key, version);
    }

    /// @notice A version's listing (entry hash, price, whether it is on sale).
    function listingOf(bytes32 key, uint64 version) external view returns (Listing memory) {
        return _listings[key][version];
    }

    /// @notice Pay the exact price of a listed version; returns the receipt id (from 1).
    function buy(bytes32 key, uint64 version) external payable returns (uint256 receiptId) {
        Listing storage listing = _listings[key][version];
        if (!listing.active) revert NotListed(key, version);
        if (msg.value != listing.price) revert WrongPayment(msg.value, listing.price);
        uint256 existing = _receipts[key][version][msg.sender];
        if (existing != 0) revert AlreadyPurchased(msg.sender, version, existing);
        receiptId = ++receiptCount;
        _receipts[key][version][msg.sender] = receiptId;
        proceeds[publisherOf[key]] += msg.value;
        emit Purchased(receiptId, key, msg.sender, version, listing.entryHash, msg.value);
    }

    /// @notice The receipt id of `buyer`'s purchase of a version, 0 when none.
    function receiptOf(bytes32 key, uint64 version, address buyer) external view returns (uint256) {
        return _receipts[key][version][buyer];
    }

    /// @notice Send the caller's proceeds to the caller.
    function withdraw() external nonReentrant returns (uint256 amount) {
        amount = proceeds[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        proceeds[msg.sender] = 0;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
    }
}
