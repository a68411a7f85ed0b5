// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title HpkeKeys
/// @notice Checks a serialised HPKE public key before the chain records it, so that every
/// key a contract admits is one the aggregator can seal to. A key is a 2-byte big-endian
/// KEM id followed by the raw key:
/// - 0x0020, DHKEM(X25519): 32 bytes (34 in all);
/// - 0x647A, ML-KEM-768 + X25519: a 1184-byte ML-KEM-768 encapsulation key, then 32 bytes
///   of X25519 (1218 in all).
/// Refused besides any other KEM id or length: an X25519 part that is a point of small
/// order or a non-canonical encoding of one (u = 0, 1, the two points of order 8, p - 1,
/// p, p + 1 with p = 2^255 - 19, with or without the top bit, which X25519 ignores), whose
/// shared secret is all zero; and an ML-KEM part whose encoded polynomial has a
/// coefficient of q = 3329 or more (FIPS 203's encapsulation key check).
library HpkeKeys {
    bytes2 internal constant KEM_X25519 = 0x0020;
    bytes2 internal constant KEM_MLKEM768_X25519 = 0x647A;
    uint256 internal constant X25519_KEY_LENGTH = 2 + 32;
    uint256 internal constant MLKEM768_X25519_KEY_LENGTH = 2 + 1184 + 32;
    /// @dev Bytes of the ML-KEM-768 encapsulation key that encode coefficients (3 x 256 x 12 bits).
    uint256 private constant MLKEM768_COEFFICIENT_BYTES = 1152;
    uint256 private constant MLKEM_Q = 3329;
    /// @dev Little-endian u-coordinates of small order (0, 1, order 8, order 8, p-1, p, p+1).
    bytes32 private constant U_0 = 0x0000000000000000000000000000000000000000000000000000000000000000;
    bytes32 private constant U_1 = 0x0100000000000000000000000000000000000000000000000000000000000000;
    bytes32 private constant U_ORDER_8_A = 0xe0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800;
    bytes32 private constant U_ORDER_8_B = 0x5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157;
    bytes32 private constant U_P_MINUS_1 = 0xecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f;
    bytes32 private constant U_P = 0xedffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f;
    bytes32 private constant U_P_PLUS_1 = 0xeeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f;
    /// @dev Clears the top bit of the little-endian encoding (the last byte's high bit).
    bytes32 private constant TOP_BIT_CLEAR = ~bytes32(uint256(0x80));
    /// @dev Masks of the byte reversal, and of the 24-bit lanes of 16 coefficients.
    uint256 private constant SWAP_8 = 0xff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00;
    uint256 private constant SWAP_16 = 0xffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000;
    uint256 private constant SWAP_32 = 0xffffffff00000000ffffffff00000000ffffffff00000000ffffffff00000000;
    uint256 private constant SWAP_64 = 0xffffffffffffffff0000000000000000ffffffffffffffff0000000000000000;
    uint256 private constant LOW_24_BYTES = 0xffffffffffffffffffffffffffffffffffffffffffffffff;
    uint256 private constant EVEN_FIELDS = 0xfff000fff000fff000fff000fff000fff000fff000fff;
    uint256 private constant LANE_BIAS = 0x2ff0002ff0002ff0002ff0002ff0002ff0002ff0002ff;
    uint256 private constant LANE_CARRY = 0x1000001000001000001000001000001000001000001000;

    /// @notice The key's KEM id is not one cotune supports, or its length is not that KEM's.
    /// @param kemId the key's first two bytes (zero when it is shorter)
    /// @param length the key's length in bytes, KEM id included
    error InvalidHpkeKey(bytes2 kemId, uint256 length);
    /// @notice The key's X25519 part is a point of small order: every shared secret is zero.
    /// @param u the X25519 public key as given (32 bytes, little endian)
    error SmallOrderX25519Key(bytes32 u);
    /// @notice The key's ML-KEM-768 part encodes a coefficient that is not below q = 3329.
    /// @param index the first such coefficient (0 to 767)
    error InvalidMlKemKey(uint256 index);

    /// @notice Revert unless `key` is a well-formed public key of a supported suite.
    function check(bytes calldata key) internal pure {
        bytes2 kemId = key.length >= 2 ? bytes2(key[:2]) : bytes2(0);
        if (kemId == KEM_X25519 && key.length == X25519_KEY_LENGTH) {
            _checkX25519(bytes32(key[2:]));
        } else if (kemId == KEM_MLKEM768_X25519 && key.length == MLKEM768_X25519_KEY_LENGTH) {
            _checkMlKem768(key[2:2 + MLKEM768_COEFFICIENT_BYTES]);
            _checkX25519(bytes32(key[key.length - 32:]));
        } else {
            revert InvalidHpkeKey(kemId, key.length);
        }
    }

    function _checkX25519(bytes32 u) private pure {
        bytes32 canonical = u & TOP_BIT_CLEAR;
        if (
            canonical == U_0 || canonical == U_1 || canonical == U_ORDER_8_A || canonical == U_ORDER_8_B
                || canonical == U_P_MINUS_1 || canonical == U_P || canonical == U_P_PLUS_1
        ) {
            revert SmallOrderX25519Key(u);
        }
    }

    /// @dev 16 coefficients (24 bytes) at a time. ByteDecode12 reads the bytes as one
    /// little-endian number of 12-bit fields, so the 32 bytes loaded are byte-reversed;
    /// the even and the odd fields are then spread to 24-bit lanes, and adding 4096 - q to
    /// every lane sets its bit 12 exactly when the field is q or more. Only a failing chunk
    /// is searched for the index.
    function _checkMlKem768(bytes calldata coefficients) private pure {
        uint256 failed = type(uint256).max;
        assembly ("memory-safe") {
            let start := coefficients.offset
            for { let i := 0 } lt(i, MLKEM768_COEFFICIENT_BYTES) { i := add(i, 24) } {
                let v := calldataload(add(start, i))
                v := or(shr(8, and(v, SWAP_8)), and(shl(8, v), SWAP_8))
                v := or(shr(16, and(v, SWAP_16)), and(shl(16, v), SWAP_16))
                v := or(shr(32, and(v, SWAP_32)), and(shl(32, v), SWAP_32))
                v := or(shr(64, and(v, SWAP_64)), and(shl(64, v), SWAP_64))
                v := and(or(shr(128, v), shl(128, v)), LOW_24_BYTES)
                let even := add(and(v, EVEN_FIELDS), LANE_BIAS)
                let odd := add(and(shr(12, v), EVEN_FIELDS), LANE_BIAS)
                if and(or(even, odd), LANE_CARRY) {
                    failed := i
                    break
                }
            }
        }
        if (failed == type(uint256).max) return;
        for (uint256 index = (failed / 3) * 2;; ++index) {
            uint256 first = 3 * (index / 2);
            uint256 b1 = uint8(coefficients[first + 1]);
            uint256 coefficient = index % 2 == 0
                ? uint8(coefficients[first]) | ((b1 & 0x0f) << 8)
                : (b1 >> 4) | (uint256(uint8(coefficients[first + 2])) << 4);
            if (coefficient >= MLKEM_Q) revert InvalidMlKemKey(index);
        }
    }
}
