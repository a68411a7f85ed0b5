"""Limits the contracts enforce, mirrored here so clients can check before they send.

Tests read each one back from the contract it mirrors.
"""

from __future__ import annotations

from typing import Final

MAX_CONTRIBUTORS: Final = 64
"""``Coordinator.MAX_CONTRIBUTORS``: the most contributors one session takes. Finalize for
that many, each accepted with an ML-KEM-768 + X25519 sealed model key (1179 bytes), stays
under EIP-7825's 2^24 gas per transaction with the client's estimate margin, and under the
128 KiB that geth-based nodes accept for one transaction."""
