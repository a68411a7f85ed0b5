"""Evaluation: mean token loss and perplexity on an eval set (base or base + adapter)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cotune.training.base_model import BaseModel
from cotune.training.data import Example
from cotune.training.encoding import Encoded, collate, encode_all
from cotune.training.forward import token_loss


@dataclass(frozen=True)
class EvalResult:
    """Mean loss per loss-carrying token, its perplexity, and the token count."""

    loss: float
    perplexity: float
    tokens: int
    examples: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON-able form."""
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "tokens": self.tokens,
            "examples": self.examples,
        }


def evaluate(
    base: BaseModel,
    examples: Sequence[Example],
    *,
    model: torch.nn.Module | None = None,
    batch_size: int = 16,
    max_length: int = 256,
) -> EvalResult:
    """Evaluate ``model`` (default: the base model) on ``examples``, one example per row."""
    encoded = encode_all(examples, base.tokenizer, max_length)
    return evaluate_encoded(base, encoded, model=model, batch_size=batch_size)


@torch.inference_mode()
def evaluate_encoded(
    base: BaseModel,
    encoded: Sequence[Encoded],
    *,
    model: torch.nn.Module | None = None,
    batch_size: int = 16,
) -> EvalResult:
    """``evaluate`` on examples already encoded (the gate scores one eval set many times)."""
    if not encoded:
        raise ValueError("the eval set has no example with a loss-carrying token")
    # Sorted by length, so each batch pads little; the sums do not depend on the order.
    encoded = sorted(encoded, key=lambda e: len(e.input_ids))
    net = model if model is not None else base.model
    was_training = net.training
    net.train(False)
    total, count = 0.0, 0
    try:
        for start in range(0, len(encoded), batch_size):
            batch = collate([[e] for e in encoded[start : start + batch_size]], base.pad_id)
            losses, tokens = token_loss(net, batch, base.device, reduction="sum")
            total += float(losses)
            count += tokens
    finally:
        net.train(was_training)
    loss = total / count
    return EvalResult(loss, math.exp(min(loss, 50.0)), count, len(encoded))
