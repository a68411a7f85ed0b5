// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {EnclaveRegistry} from "./EnclaveRegistry.sol";
import {HpkeKeys} from "./HpkeKeys.sol";
import {ModelNFT} from "./ModelNFT.sol";

/// @title Coordinator
/// @notice Sessions of private multi-party fine-tuning: who may submit, what each
/// contributor committed, who is paid, who is slashed, and who owns the model.
/// Open -> Training (quorum) -> Finalized, or Cancelled (owner, while Open and before the
/// submit deadline or below quorum), or Expired (below quorum at the submit deadline, or no
/// finalize by the training deadline). Money moves only through `claim` (pull payments).
/// Rewards: each accepted contributor's share of the pool is pool * weight / totalWeight,
/// rounded down and claimable as the pool grows (a slash after finalize adds a stake to
/// it). Once the pool is final (every rejected contribution slashed, or the slash window
/// closed) an accepted contributor's next claim settles it, and the last one to settle
/// takes what is left, rounding dust included, so a fully claimed session holds nothing.
contract Coordinator is EIP712, ReentrancyGuard {
    enum State {
        None,
        Open,
        Training,
        Finalized,
        Cancelled,
        Expired
    }

    enum Status {
        None,
        Submitted,
        Accepted,
        Slashed,
        Refunded
    }

    /// @notice What an accepted contribution has been paid: nothing yet, its stake back
    /// (with the reward share so far), or settled (stake and final reward share).
    enum Payout {
        None,
        StakeReturned,
        Settled
    }

    struct SessionParams {
        uint256 enclaveId;
        bytes32 measurement;
        uint32 quorum;
        uint32 maxContributors;
        uint256 minStake;
        uint64 submitDeadline;
        uint64 trainingDeadline;
        address[] allowList;
        bytes32 evalSetCommitment;
        bytes32 gateRulesHash;
        bytes32 modelRef;
    }

    struct Session {
        address owner;
        State state;
        bool allowListed;
        uint32 quorum;
        uint32 maxContributors;
        uint32 submitted;
        address enclaveSigner;
        uint64 submitDeadline;
        uint64 trainingDeadline;
        uint64 finalizedAt;
        uint32 acceptedCount;
        uint32 slashedCount;
        uint32 settledCount;
        uint256 enclaveId;
        uint256 minStake;
        uint128 pool;
        /// @dev Paid out of the pool: rewards (Finalized), or to the owner (Cancelled, Expired).
        /// Beside `pool` in one slot, so paying a reward rewrites a slot already in use.
        uint128 poolPaid;
        uint256 totalWeight;
        bytes32 measurement;
        bytes32 evalSetCommitment;
        bytes32 gateRulesHash;
        bytes32 modelRef;
        bytes32 modelHash;
        bytes32 manifestHash;
    }

    struct Contribution {
        uint96 stake;
        uint96 rewardPaid;
        uint48 weight;
        Status status;
        Payout payout;
        bytes32 ciphertextHash;
    }

    struct RejectionCertificate {
        uint256 sessionId;
        address contributor;
        bytes32 ciphertextHash;
        uint16 reasonCode;
        int64 score;
        bytes32 evidenceHash;
    }

    bytes32 public constant REJECTION_TYPEHASH = keccak256(
        "RejectionCertificate(uint256 sessionId,address contributor,bytes32 ciphertextHash,uint16 reasonCode,int64 score,bytes32 evidenceHash)"
    );
    /// @notice Most contributors a session takes: finalize for this many, each with an
    /// ML-KEM-768 + X25519 sealed key (1179 bytes), stays under EIP-7825's 2^24 gas per
    /// transaction with the client's estimate margin and under the 128 KiB that nodes
    /// accept for one transaction.
    uint32 public constant MAX_CONTRIBUTORS = 64;

    EnclaveRegistry public immutable registry;
    ModelNFT public immutable modelNft;
    /// @notice How long after finalize a rejected contributor can be slashed; afterwards
    /// an unslashed, unaccepted contributor reclaims the stake.
    uint64 public immutable slashWindow;

    uint256 public sessionCount;
    mapping(uint256 sessionId => Session) private _sessions;
    mapping(uint256 sessionId => mapping(address contributor => Contribution)) private _contributions;
    mapping(uint256 sessionId => mapping(address account => bool)) public isAllowed;

    event SessionCreated(
        uint256 indexed sessionId,
        address indexed owner,
        uint256 indexed enclaveId,
        bytes32 measurement,
        uint32 quorum,
        uint32 maxContributors,
        uint256 minStake,
        uint64 submitDeadline,
        uint64 trainingDeadline,
        uint256 rewardPool
    );
    event Submitted(
        uint256 indexed sessionId,
        address indexed contributor,
        bytes32 ciphertextHash,
        bytes hpkePublicKey,
        uint256 stake
    );
    event QuorumReached(uint256 indexed sessionId, uint32 submitted);
    event SessionFinalized(
        uint256 indexed sessionId, bytes32 modelHash, bytes32 manifestHash, uint32 acceptedCount, uint256 totalWeight
    );
    event ContributionAccepted(uint256 indexed sessionId, address indexed contributor, uint48 weight, uint256 tokenId);
    event SessionCancelled(uint256 indexed sessionId);
    event SessionExpired(uint256 indexed sessionId, State previous);
    event Slashed(
        uint256 indexed sessionId,
        address indexed contributor,
        uint16 reasonCode,
        int64 score,
        bytes32 evidenceHash,
        uint256 amount
    );
    event Claimed(uint256 indexed sessionId, address indexed account, uint256 amount);

    error UnknownSession(uint256 sessionId);
    error WrongState(uint256 sessionId, State actual, State required);
    error NotSessionOwner(uint256 sessionId, address caller);
    error NotEnclaveSigner(uint256 sessionId, address caller);
    error EnclaveRevoked(uint256 enclaveId);
    error MeasurementMismatch(bytes32 pinned, bytes32 registered);
    error InvalidQuorum(uint32 quorum, uint32 maxContributors);
    error InvalidDeadlines(uint64 submitDeadline, uint64 trainingDeadline);
    error NotAllowListed(uint256 sessionId, address contributor);
    error AlreadySubmitted(uint256 sessionId, address contributor);
    error StakeTooLow(uint256 sent, uint256 required);
    error StakeTooHigh(uint256 sent);
    error EmptyCiphertextHash();
    error SubmitDeadlinePassed(uint256 sessionId, uint64 deadline);
    error SubmitDeadlineNotReached(uint256 sessionId, uint64 deadline);
    error TrainingDeadlinePassed(uint256 sessionId, uint64 deadline);
    error TrainingDeadlineNotReached(uint256 sessionId, uint64 deadline);
    error LengthMismatch();
    error NoAcceptedContributors();
    error NotEligible(uint256 sessionId, address contributor, Status status);
    error ZeroWeight(address contributor);
    error InvalidSignature(address recovered, address expected);
    error CiphertextMismatch(bytes32 certified, bytes32 committed);
    error AlreadySlashed(uint256 sessionId, address contributor);
    error SlashWindowClosed(uint256 sessionId, uint64 closedAt);
    error NothingToClaim(uint256 sessionId, address account);
    /// @notice Past the submit deadline with quorum met, only `close` may move the session.
    /// @param sessionId the session
    /// @param submitDeadline when its submissions closed
    error CancelAfterQuorum(uint256 sessionId, uint64 submitDeadline);
    error TransferFailed(address to, uint256 amount);

    constructor(EnclaveRegistry registry_, ModelNFT modelNft_, uint64 slashWindow_)
        EIP712("cotune Coordinator", "1")
    {
        registry = registry_;
        modelNft = modelNft_;
        slashWindow = slashWindow_;
    }

    // ----------------------------------------------------------------- owner

    /// @notice Open a session; `msg.value` funds its reward pool.
    function createSession(SessionParams calldata p) external payable returns (uint256 sessionId) {
        (address signer, bytes32 registered, bool revoked) = registry.signerOf(p.enclaveId);
        if (revoked) revert EnclaveRevoked(p.enclaveId);
        if (registered != p.measurement) revert MeasurementMismatch(p.measurement, registered);
        if (p.quorum == 0 || p.quorum > p.maxContributors || p.maxContributors > MAX_CONTRIBUTORS) {
            revert InvalidQuorum(p.quorum, p.maxContributors);
        }
        if (p.submitDeadline <= block.timestamp || p.trainingDeadline <= p.submitDeadline) {
            revert InvalidDeadlines(p.submitDeadline, p.trainingDeadline);
        }
        sessionId = ++sessionCount;
        Session storage s = _sessions[sessionId];
        s.owner = msg.sender;
        s.state = State.Open;
        s.allowListed = p.allowList.length > 0;
        s.quorum = p.quorum;
        s.maxContributors = p.maxContributors;
        s.enclaveSigner = signer;
        s.submitDeadline = p.submitDeadline;
        s.trainingDeadline = p.trainingDeadline;
        s.enclaveId = p.enclaveId;
        s.minStake = p.minStake;
        s.pool = SafeCast.toUint128(msg.value);
        s.measurement = p.measurement;
        s.evalSetCommitment = p.evalSetCommitment;
        s.gateRulesHash = p.gateRulesHash;
        s.modelRef = p.modelRef;
        for (uint256 i = 0; i < p.allowList.length; ++i) {
            isAllowed[sessionId][p.allowList[i]] = true;
        }
        emit SessionCreated(
            sessionId,
            msg.sender,
            p.enclaveId,
            p.measurement,
            p.quorum,
            p.maxContributors,
            p.minStake,
            p.submitDeadline,
            p.trainingDeadline,
            msg.value
        );
    }

    /// @notice Cancel an open session before its submit deadline, or after it below quorum;
    /// every stake and the pool become claimable in full. Once the deadline has passed with
    /// quorum met, the contributors are owed training: only `close` moves the session then.
    function cancel(uint256 sessionId) external {
        Session storage s = _session(sessionId);
        if (msg.sender != s.owner) revert NotSessionOwner(sessionId, msg.sender);
        _requireState(sessionId, s, State.Open);
        if (block.timestamp > s.submitDeadline && s.submitted >= s.quorum) {
            revert CancelAfterQuorum(sessionId, s.submitDeadline);
        }
        s.state = State.Cancelled;
        emit SessionCancelled(sessionId);
    }

    // ----------------------------------------------------------- contributor

    /// @notice Commit a ciphertext with a stake. Only allow-listed (when a list is set),
    /// only while Open and before the submit deadline, once per address, with an HPKE
    /// public key the enclave can seal to (see `HpkeKeys`).
    function submit(uint256 sessionId, bytes32 ciphertextHash, bytes calldata contributorHpkePublicKey)
        external
        payable
    {
        Session storage s = _session(sessionId);
        _requireState(sessionId, s, State.Open);
        if (block.timestamp > s.submitDeadline) revert SubmitDeadlinePassed(sessionId, s.submitDeadline);
        if (s.allowListed && !isAllowed[sessionId][msg.sender]) revert NotAllowListed(sessionId, msg.sender);
        if (ciphertextHash == bytes32(0)) revert EmptyCiphertextHash();
        HpkeKeys.check(contributorHpkePublicKey);
        if (msg.value < s.minStake) revert StakeTooLow(msg.value, s.minStake);
        if (msg.value > type(uint96).max) revert StakeTooHigh(msg.value);
        Contribution storage c = _contributions[sessionId][msg.sender];
        if (c.status != Status.None) revert AlreadySubmitted(sessionId, msg.sender);
        c.stake = uint96(msg.value);
        c.status = Status.Submitted;
        c.ciphertextHash = ciphertextHash;
        uint32 submitted = ++s.submitted;
        emit Submitted(sessionId, msg.sender, ciphertextHash, contributorHpkePublicKey, msg.value);
        if (submitted == s.maxContributors) {
            s.state = State.Training;
            emit QuorumReached(sessionId, submitted);
        }
    }

    /// @notice After the submit deadline: start training when quorum was met, else expire.
    function close(uint256 sessionId) external {
        Session storage s = _session(sessionId);
        _requireState(sessionId, s, State.Open);
        if (block.timestamp <= s.submitDeadline) revert SubmitDeadlineNotReached(sessionId, s.submitDeadline);
        if (s.submitted >= s.quorum) {
            s.state = State.Training;
            emit QuorumReached(sessionId, s.submitted);
        } else {
            s.state = State.Expired;
            emit SessionExpired(sessionId, State.Open);
        }
    }

    /// @notice After the training deadline without finalize: stakes and pool go back.
    function expire(uint256 sessionId) external {
        Session storage s = _session(sessionId);
        _requireState(sessionId, s, State.Training);
        if (block.timestamp <= s.trainingDeadline) {
            revert TrainingDeadlineNotReached(sessionId, s.trainingDeadline);
        }
        s.state = State.Expired;
        emit SessionExpired(sessionId, State.Training);
    }

    // --------------------------------------------------------------- enclave

    /// @notice Record the trained model, accept contributors with their weights, mint
    /// one model token per accepted contributor and publish their sealed model keys.
    function finalize(
        uint256 sessionId,
        bytes32 modelHash,
        bytes32 manifestHash,
        address[] calldata accepted,
        uint48[] calldata weights,
        bytes[] calldata sealedKeys
    ) external {
        Session storage s = _session(sessionId);
        _requireState(sessionId, s, State.Training);
        _requireEnclaveSigner(sessionId, s);
        if (block.timestamp > s.trainingDeadline) revert TrainingDeadlinePassed(sessionId, s.trainingDeadline);
        uint256 count = accepted.length;
        if (count == 0) revert NoAcceptedContributors();
        if (weights.length != count || sealedKeys.length != count) revert LengthMismatch();
        uint256 totalWeight = _accept(sessionId, accepted, weights);
        s.state = State.Finalized;
        s.finalizedAt = uint64(block.timestamp);
        s.acceptedCount = uint32(count);
        s.totalWeight = totalWeight;
        s.modelHash = modelHash;
        s.manifestHash = manifestHash;
        emit SessionFinalized(sessionId, modelHash, manifestHash, uint32(count), totalWeight);
        modelNft.mintSession(sessionId, s.enclaveId, modelHash, manifestHash, accepted, sealedKeys);
    }

    // ------------------------------------------------------------------ anyone

    /// @notice The EIP-712 digest of a rejection certificate for this chain and contract.
    function certificateDigest(RejectionCertificate calldata cert) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    REJECTION_TYPEHASH,
                    cert.sessionId,
                    cert.contributor,
                    cert.ciphertextHash,
                    cert.reasonCode,
                    cert.score,
                    cert.evidenceHash
                )
            )
        );
    }

    /// @notice Slash a contributor the session's enclave rejected. Anyone may call; the
    /// stake joins the pool shared by the accepted (or returned to the owner on expiry).
    function slashWithProof(RejectionCertificate calldata cert, bytes calldata signature) external {
        uint256 sessionId = cert.sessionId;
        Session storage s = _session(sessionId);
        if (s.state == State.Finalized) {
            uint64 closesAt = s.finalizedAt + slashWindow;
            if (block.timestamp > closesAt) revert SlashWindowClosed(sessionId, closesAt);
        } else if (s.state != State.Training) {
            revert WrongState(sessionId, s.state, State.Training);
        }
        (, , bool revoked) = registry.signerOf(s.enclaveId);
        if (revoked) revert EnclaveRevoked(s.enclaveId);
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(certificateDigest(cert), signature);
        if (err != ECDSA.RecoverError.NoError || recovered != s.enclaveSigner) {
            revert InvalidSignature(recovered, s.enclaveSigner);
        }
        Contribution storage c = _contributions[sessionId][cert.contributor];
        if (c.status == Status.Slashed) revert AlreadySlashed(sessionId, cert.contributor);
        if (c.status != Status.Submitted) revert NotEligible(sessionId, cert.contributor, c.status);
        if (c.ciphertextHash != cert.ciphertextHash) revert CiphertextMismatch(cert.ciphertextHash, c.ciphertextHash);
        c.status = Status.Slashed;
        ++s.slashedCount;
        s.pool += c.stake;
        emit Slashed(sessionId, cert.contributor, cert.reasonCode, cert.score, cert.evidenceHash, c.stake);
    }

    /// @notice Withdraw everything `msg.sender` is owed by a session: a returned stake,
    /// a reward share (accepted contributors), or the pool (owner, after cancel or expiry).
    /// An accepted contributor's first claim once the pool is final settles it even when
    /// nothing is left to pay, so that the last to settle can take the rounding dust.
    function claim(uint256 sessionId) external nonReentrant returns (uint256 amount) {
        Session storage s = _session(sessionId);
        (uint256 due, bool settled) = _settleContributor(sessionId, s, msg.sender);
        amount = due + _settleOwner(s, msg.sender);
        if (amount == 0 && !settled) revert NothingToClaim(sessionId, msg.sender);
        emit Claimed(sessionId, msg.sender, amount);
        if (amount > 0) {
            (bool ok,) = payable(msg.sender).call{value: amount}("");
            if (!ok) revert TransferFailed(msg.sender, amount);
        }
    }

    // ------------------------------------------------------------------- views

    /// @notice What `account` could claim from a session now.
    function claimable(uint256 sessionId, address account) external view returns (uint256) {
        Session storage s = _sessions[sessionId];
        Contribution storage c = _contributions[sessionId][account];
        (uint256 stake, uint256 reward) = _due(s, c);
        uint256 owner = s.owner == account ? _ownerDue(s) : 0;
        return stake + reward + owner;
    }

    function getSession(uint256 sessionId) external view returns (Session memory) {
        return _session(sessionId);
    }

    function getContribution(uint256 sessionId, address contributor) external view returns (Contribution memory) {
        return _contributions[sessionId][contributor];
    }

    // ----------------------------------------------------------------- private

    function _session(uint256 sessionId) private view returns (Session storage s) {
        s = _sessions[sessionId];
        if (s.state == State.None) revert UnknownSession(sessionId);
    }

    function _requireState(uint256 sessionId, Session storage s, State required) private view {
        if (s.state != required) revert WrongState(sessionId, s.state, required);
    }

    function _requireEnclaveSigner(uint256 sessionId, Session storage s) private view {
        if (msg.sender != s.enclaveSigner) revert NotEnclaveSigner(sessionId, msg.sender);
        (, , bool revoked) = registry.signerOf(s.enclaveId);
        if (revoked) revert EnclaveRevoked(s.enclaveId);
    }

    /// @dev (stake, reward) owed to a contribution now.
    function _due(Session storage s, Contribution storage c) private view returns (uint256 stake, uint256 reward) {
        State state = s.state;
        if (state == State.Cancelled || state == State.Expired) {
            if (c.status == Status.Submitted) stake = c.stake;
        } else if (state == State.Finalized) {
            if (c.status == Status.Accepted) {
                if (c.payout == Payout.None) stake = c.stake;
                if (c.payout != Payout.Settled) reward = _rewardDue(s, c);
            } else if (c.status == Status.Submitted && block.timestamp > s.finalizedAt + slashWindow) {
                stake = c.stake;
            }
        }
    }

    /// @dev An unsettled accepted contribution's reward now: its share of the pool so far,
    /// or, for the last to settle a final pool, all the pool not yet paid. Every other
    /// contribution settled at exactly its rounded-down share of that same pool, so the
    /// rest is this one's share plus the rounding dust.
    function _rewardDue(Session storage s, Contribution storage c) private view returns (uint256) {
        if (_poolFinal(s) && s.settledCount + 1 == s.acceptedCount) return s.pool - s.poolPaid;
        return (uint256(s.pool) * c.weight) / s.totalWeight - c.rewardPaid;
    }

    /// @dev Whether a finalized session's pool can no longer grow: no contribution is left
    /// to slash, or the slash window has closed.
    function _poolFinal(Session storage s) private view returns (bool) {
        return s.submitted == s.acceptedCount + s.slashedCount || block.timestamp > s.finalizedAt + slashWindow;
    }

    /// @dev Pay out what `account` is owed as a contributor; `settled` when this claim
    /// settled an accepted contribution on a final pool.
    function _settleContributor(uint256 sessionId, Session storage s, address account)
        private
        returns (uint256 amount, bool settled)
    {
        Contribution storage c = _contributions[sessionId][account];
        (uint256 stake, uint256 reward) = _due(s, c);
        if (stake > 0) {
            if (c.status == Status.Accepted) c.payout = Payout.StakeReturned;
            else c.status = Status.Refunded;
        }
        settled = s.state == State.Finalized && c.status == Status.Accepted && c.payout != Payout.Settled
            && _poolFinal(s);
        if (settled) {
            c.payout = Payout.Settled;
            ++s.settledCount;
        }
        if (reward > 0) {
            c.rewardPaid += SafeCast.toUint96(reward);
            s.poolPaid += uint128(reward); // at most pool - poolPaid: it fits
        }
        amount = stake + reward;
    }

    /// @dev Mark each accepted contribution with its weight; return the weights' sum.
    function _accept(uint256 sessionId, address[] calldata accepted, uint48[] calldata weights)
        private
        returns (uint256 totalWeight)
    {
        for (uint256 i = 0; i < accepted.length; ++i) {
            Contribution storage c = _contributions[sessionId][accepted[i]];
            if (c.status != Status.Submitted) revert NotEligible(sessionId, accepted[i], c.status);
            if (weights[i] == 0) revert ZeroWeight(accepted[i]);
            c.status = Status.Accepted;
            c.weight = weights[i];
            totalWeight += weights[i];
            emit ContributionAccepted(sessionId, accepted[i], weights[i], (sessionId << 32) | i);
        }
    }

    function _ownerDue(Session storage s) private view returns (uint256) {
        if (s.state == State.Cancelled || s.state == State.Expired) return s.pool - s.poolPaid;
        return 0;
    }

    function _settleOwner(Session storage s, address account) private returns (uint256 due) {
        if (account != s.owner) return 0;
        due = _ownerDue(s);
        s.poolPaid += uint128(due); // pool - poolPaid: it fits
    }
}
