// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IAttestationVerifier
/// @notice Decides whether attestation evidence binds an enclave's signer, HPKE key and
/// code measurement. A dev verifier checks a dev-authority signature; TDX / SEV-SNP
/// verifiers check a hardware quote whose report data commits to the same three values.
/// Evidence is opaque bytes; the registry admits each piece of evidence once, so it should
/// be fresh (the dev verifier's carries an expiry and a nonce; a quote, its own nonce).
interface IAttestationVerifier {
    /// @return true when `evidence` attests that an enclave running `measurement`
    /// holds the private keys of `signer` and `hpkePublicKey`.
    function verify(address signer, bytes calldata hpkePublicKey, bytes32 measurement, bytes calldata evidence)
        external
        view
        returns (bool);

    /// @return a short name such as "dev" or "tdx", shown by clients next to the record.
    function kind() external view returns (string memory);
}
