"""Evaluation: mean token loss and perplexity on an eval set (base or base + adapter).

``evaluate(..., accuracy=True)`` adds task accuracy (:mod:`cotune.training.accuracy`),
so every report of a loss can carry whether the answers are right too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from peft.tuners.lora import LoraLayer

from cotune.training.accuracy import AccuracyResult, task_accuracy
from cotune.training.base_model import BaseModel
from cotune.training.data import Example
from cotune.training.encoding import Batch, Encoded, collate, encode_all
from cotune.training.forward import (
    DecoderState,
    decoder_state,
    loss_from_state,
    prunes_last_layer,
    token_loss,
)


@dataclass(frozen=True)
class EvalResult:
    """Mean loss per loss-carrying token, its perplexity, and the token count."""

    loss: float
    perplexity: float
    tokens: int
    examples: int
    task_accuracy: AccuracyResult | None = None
    """Greedy-reply accuracy, when it was measured."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (``task_accuracy`` only when measured)."""
        out: dict[str, Any] = {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "tokens": self.tokens,
            "examples": self.examples,
        }
        if self.task_accuracy is not None:
            out["task_accuracy"] = self.task_accuracy.to_dict()
        return out


def evaluate(
    base: BaseModel,
    examples: Sequence[Example],
    *,
    model: torch.nn.Module | None = None,
    batch_size: int = 16,
    max_length: int = 256,
    accuracy: bool = False,
    max_accuracy_prompts: int | None = None,
) -> EvalResult:
    """Evaluate ``model`` (default: the base model) on ``examples``, one example per row.

    With ``accuracy``, also the task accuracy of its greedy replies (on at most
    ``max_accuracy_prompts`` of them).
    """
    encoded = encode_all(examples, base.tokenizer, max_length)
    result = evaluate_encoded(base, encoded, model=model, batch_size=batch_size)
    if not accuracy:
        return result
    scored = task_accuracy(base, examples, model=model, max_prompts=max_accuracy_prompts)
    return replace(result, task_accuracy=scored)


def evaluate_encoded(
    base: BaseModel,
    encoded: Sequence[Encoded],
    *,
    model: torch.nn.Module | None = None,
    batch_size: int = 16,
) -> EvalResult:
    """``evaluate`` on examples already encoded."""
    net = model if model is not None else base.model
    return _full_pass(net, _eval_batches(base, encoded, batch_size), base.device, len(encoded))


STATE_CACHE_LIMIT = 1 << 28
"""Most hidden-state values ``TopLayerEval`` keeps (1 GiB in float32); beyond, no cache."""


class TopLayerEval:
    """One eval set, for adapters confined to the base model's top ``layers`` decoder layers.

    The layers below stay the base model's whatever such an adapter learns, so their
    output on the eval set is computed once, with the base model's own evaluation
    (``base_eval``), and each adapter's evaluation runs the top layers alone: the gate
    scores every probe this way. ``layers`` 0 means all of them. Models outside
    ``prunes_last_layer``, and eval sets whose states would pass ``STATE_CACHE_LIMIT``,
    are evaluated in full each time, with the same results.
    """

    def __init__(
        self, base: BaseModel, encoded: Sequence[Encoded], layers: int, *, batch_size: int = 16
    ) -> None:
        self.base = base
        self.examples = len(encoded)
        self.batches = _eval_batches(base, encoded, batch_size)
        depth = int(base.model.config.num_hidden_layers)
        self.first_layer = max(0, depth - layers) if layers else 0
        size = sum(b.input_ids.numel() for b in self.batches) * int(base.model.config.hidden_size)
        if _adapted_layers(base.model):
            raise ValueError("the base model carries LoRA layers: detach them first")
        self.states: list[DecoderState] | None = None
        if prunes_last_layer(base.model) and size <= STATE_CACHE_LIMIT:
            was_training = base.model.training
            base.model.train(False)
            try:
                with torch.inference_mode():
                    self.states = [
                        decoder_state(base.model, b, base.device, self.first_layer)
                        for b in self.batches
                    ]
            finally:
                base.model.train(was_training)
        self.base_eval = self.evaluate()

    def evaluate(self, model: torch.nn.Module | None = None) -> EvalResult:
        """Evaluate ``model`` (default: the base model), an adapter on the top layers only."""
        if model is not None and self.states is not None:
            below = sorted({i for i in _adapted_layers(model) if i < self.first_layer})
            if below:
                raise ValueError(
                    f"the adapter changes layers {below}, below the evaluated top layers "
                    f"(from layer {self.first_layer})"
                )
        net = model if model is not None else self.base.model
        if self.states is None:
            return _full_pass(net, self.batches, self.base.device, self.examples)
        losses = [partial(loss_from_state, net, s, reduction="sum") for s in self.states]
        return _summed(net, losses, self.examples)


def _adapted_layers(model: torch.nn.Module) -> set[int]:
    """Indices of the decoder layers holding LoRA modules (-1 for one outside any layer)."""
    layers = set()
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            found = re.search(r"\.layers\.(\d+)\.", name)
            layers.add(int(found.group(1)) if found else -1)
    return layers


def _eval_batches(base: BaseModel, encoded: Sequence[Encoded], batch_size: int) -> list[Batch]:
    if not encoded:
        raise ValueError("the eval set has no example with a loss-carrying token")
    # Sorted by length, so each batch pads little; the sums do not depend on the order.
    ordered = sorted(encoded, key=lambda e: len(e.input_ids))
    return [
        collate([[e] for e in ordered[start : start + batch_size]], base.pad_id)
        for start in range(0, len(ordered), batch_size)
    ]


def _full_pass(
    net: torch.nn.Module, batches: Sequence[Batch], device: torch.device, examples: int
) -> EvalResult:
    losses = [partial(token_loss, net, b, device, reduction="sum") for b in batches]
    return _summed(net, losses, examples)


@torch.inference_mode()
def _summed(
    net: torch.nn.Module, losses: Sequence[Callable[[], tuple[torch.Tensor, int]]], examples: int
) -> EvalResult:
    """Mean loss per token over batches of one example per row, from their summed losses."""
    was_training = net.training
    net.train(False)
    total, count = 0.0, 0
    try:
        for loss_of in losses:
            summed, tokens = loss_of()
            total += float(summed)
            count += tokens
    finally:
        net.train(was_training)
    mean = total / count
    return EvalResult(mean, math.exp(min(mean, 50.0)), count, examples)
