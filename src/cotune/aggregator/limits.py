"""What the aggregator's operator lets one session ask for, checked before any work.

A session's owner commits the training spec (steps, sequence length, batch) and the gate
rules (bytes, examples and tokens per contribution) before anyone submits; from those and
the number of submissions the chain holds, :func:`over_limits` computes the worst case the
session could cost, without fetching a byte, and names each cap it would break. A session
over a cap is refused before it starts (on chain it then expires and every stake goes
back), so no owner can occupy a shared aggregator for longer than the caps allow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from cotune.aggregator.spec import SessionSpec
from cotune.crypto.stream import DEFAULT_CHUNK_SIZE, ciphertext_length
from cotune.dataset.provenance import MAX_HEADER_BYTES, SUBMISSION_MAGIC
from cotune.training.rules import GateRules

HEADER_ALLOWANCE = 2048
"""Bytes a stream header may take (the fixed fields and the sealed file key, any suite)."""
ENVELOPE_ALLOWANCE = len(SUBMISSION_MAGIC) + MAX_HEADER_BYTES + 1
"""Bytes a submission envelope may add before the JSONL data."""


def max_ciphertext_bytes(max_plaintext: int) -> int:
    """The largest ciphertext a contribution of ``max_plaintext`` JSONL bytes can need.

    Counted at the SDK's chunk size: a ciphertext cut into smaller chunks is larger still,
    and refused (``too_large``), as the uploader chose that layout.
    """
    return ciphertext_length(
        max_plaintext + ENVELOPE_ALLOWANCE, DEFAULT_CHUNK_SIZE, HEADER_ALLOWANCE
    )


@dataclass(frozen=True)
class OperatorLimits:
    """Caps an operator sets for every session its aggregator runs (``aggregator run`` flags).

    The defaults admit a session with the SDK's defaults (10 contributors, 3 epochs, gate
    rules' caps) and bound its cost to a few hours of the built-in model on a laptop.
    """

    max_contributors: int = 64
    """Submissions one session may have."""
    max_contribution_bytes: int = 64 << 20
    """A session's rules may not let one contribution be larger (plaintext)."""
    max_session_bytes: int = 2 << 30
    """Submissions times the per-contribution cap (ciphertext). Parsed, a contribution
    takes about seven times its bytes in memory while the gate holds it."""
    max_seq_len: int = 4096
    """Tokens per training sequence."""
    max_batch_size: int = 256
    """Examples per optimisation step."""
    max_rank: int = 64
    """LoRA rank of the joint run and of the gate's probes (a step's cost grows with it)."""
    max_eval_examples: int = 5_000
    """Examples of the owner's eval set: every probe and the report evaluate all of them."""
    max_steps: int = 200_000
    """Optimisation steps of the joint run, in the worst case the spec and rules allow."""
    max_train_tokens: int = 500_000_000
    """Tokens of the joint run (every epoch), in the worst case."""
    max_probe_tokens: int = 200_000
    """Tokens of one contributor's gate probe (``probe_token_budget``)."""
    max_session_seconds: float | None = 6 * 3600.0
    """Wall-clock budget of one session's run, on top of its training deadline (None: the
    deadline alone, which the owner chooses)."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is not None and value <= 0:
                raise ValueError(f"{spec.name} must be > 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what ``GET /limits`` shows owners)."""
        return asdict(self)


def worst_case(spec: SessionSpec, rules: GateRules, submissions: int) -> dict[str, int]:
    """The most a session can cost: steps and tokens of its joint run, bytes it can make us hold.

    Every contribution at the rules' caps, every one accepted (balancing never grows the
    union), every example at the full sequence length unless the token cap is lower.
    """
    hp = spec.hyperparams
    examples = submissions * rules.max_examples
    if hp.max_steps is not None:  # the trainer runs exactly max_steps, whatever the epochs
        steps = hp.max_steps
        tokens = steps * hp.batch_size * hp.seq_len
    else:
        steps = math.ceil(examples / hp.batch_size) * hp.epochs
        per_epoch_tokens = min(examples * hp.seq_len, submissions * rules.max_tokens)
        tokens = min(steps * hp.batch_size * hp.seq_len, per_epoch_tokens * hp.epochs)
    return {
        "steps": steps,
        "train_tokens": tokens,
        "session_bytes": submissions * max_ciphertext_bytes(rules.max_contribution_bytes),
    }


def over_limits(
    spec: SessionSpec, rules: GateRules, submissions: int, limits: OperatorLimits
) -> list[str]:
    """Each cap of ``limits`` the session would break, in words (empty: it may run)."""
    hp = spec.hyperparams
    cost = worst_case(spec, rules, submissions)
    checks = [
        ("submissions", submissions, limits.max_contributors),
        ("rules.max_contribution_bytes", rules.max_contribution_bytes,
         limits.max_contribution_bytes),
        ("seq_len", hp.seq_len, limits.max_seq_len),
        ("batch_size", hp.batch_size, limits.max_batch_size),
        ("rank", hp.rank, limits.max_rank),
        ("rules.probe_rank", rules.probe_rank, limits.max_rank),
        ("rules.probe_token_budget", rules.probe_token_budget, limits.max_probe_tokens),
        ("worst-case steps", cost["steps"], limits.max_steps),
        ("worst-case training tokens", cost["train_tokens"], limits.max_train_tokens),
        ("worst-case bytes held", cost["session_bytes"], limits.max_session_bytes),
    ]  # fmt: skip
    return [f"{name} {value:,} > {cap:,}" for name, value, cap in checks if value > cap]
