"""The enclave aggregator: its runtime (keys, measurement, attestation) and the session service."""
