"""LoRA fine-tuning with ``transformers`` + ``peft``.

A step is ``batch_size`` examples (the same unit as a ``transformers.Trainer`` batch, so
the same hyperparameters mean the same number of updates). Short examples share a row
with block-diagonal attention (``pack``), and the last layer's queries, MLP and output
head run on loss-carrying positions only (``cotune.training.forward``). The data order
is seeded, and the same inputs and seed on the same machine give byte-identical adapters.

Sorting steps by length would cut padding further, but it makes steps single-domain
when length tracks the domain, and measured eval loss got worse (0.40 -> 0.46 on the demo
data), so steps stay uniformly shuffled.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer

from cotune.training.base_model import BaseModel
from cotune.training.config import LoraHyperparams
from cotune.training.data import Example
from cotune.training.encoding import Encoded, collate, encode_all, pack
from cotune.training.forward import token_loss

StepCallback = Callable[[int, int, float], None]
"""Called after each step with (step, total steps, loss)."""


@dataclass
class TrainResult:
    """A trained adapter attached to the base model, and what the run did."""

    model: PeftModel
    steps: int
    tokens: int
    seconds: float
    final_loss: float
    first_loss: float
    """The first step's loss: the base model's own, as the adapter starts as a no-op."""

    @property
    def tokens_per_second(self) -> float:
        """Real (non-padding) tokens processed per second."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


T = TypeVar("T")


def balance_sources(sources: Sequence[Sequence[T]], seed: int) -> list[T]:
    """Resample every source to the mean source size, so the largest does not drown the rest."""
    if not sources:
        return []
    target = max(1, round(sum(len(s) for s in sources) / len(sources)))
    rng = random.Random(seed)
    balanced: list[T] = []
    for source in sources:
        items = list(source)
        if not items:
            continue
        picked = [items[i % len(items)] for i in range(target)] if len(items) < target else items
        if len(picked) > target:
            picked = rng.sample(picked, target)
        balanced.extend(picked)
    return balanced


class NothingToTrainError(ValueError):
    """No example keeps a loss-carrying token within the sequence length."""


def plan_epoch(count: int, batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch's steps as example indices: shuffled, every example exactly once."""
    order = list(range(count))
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)][::-1]


def _lora_config(base: BaseModel, hp: LoraHyperparams) -> LoraConfig:
    layers = int(base.model.config.num_hidden_layers)
    if hp.last_layers > layers:
        raise ValueError(f"last_layers is {hp.last_layers}, but the base model has {layers} layers")
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=hp.rank,
        lora_alpha=hp.alpha,
        lora_dropout=hp.dropout,
        target_modules=list(hp.target_modules),
        layers_to_transform=list(range(layers - hp.last_layers, layers))
        if hp.last_layers
        else None,
    )


def _lora_shape(config: Any) -> tuple[object, ...]:
    layers = config.layers_to_transform
    return (
        config.r,
        config.lora_alpha,
        config.lora_dropout,
        frozenset(config.target_modules),
        None if layers is None else tuple(layers),
    )


def init_lora(model: PeftModel, seed: int) -> None:
    """Set every LoRA layer to its seeded initial value: A as ``nn.Linear`` starts, B zero."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.reset_lora_parameters(model.active_adapter, init_lora_weights=True)  # type: ignore[no-untyped-call]


def attach_lora(base: BaseModel, hp: LoraHyperparams) -> PeftModel:
    """Wrap the base model with a freshly (and reproducibly) initialised LoRA adapter."""
    model = get_peft_model(base.model, _lora_config(base, hp))
    init_lora(model, hp.seed)
    return model


def detach_lora(model: PeftModel) -> None:
    """Remove the adapter layers, leaving the base model as it was (for the next run)."""
    model.unload()


def train_lora(
    base: BaseModel,
    examples: Sequence[Example],
    hp: LoraHyperparams,
    *,
    token_budget: int | None = None,
    on_step: StepCallback | None = None,
    adapter: PeftModel | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``examples``; the result stays attached to ``base.model``.

    ``token_budget`` caps the real tokens seen (the quality gate's bounded runs). Call
    ``detach_lora(result.model)`` before training another adapter on the same base, or
    pass it back as ``adapter``: it is re-initialised as ``attach_lora`` would (the same
    result, without rebuilding the layers: the gate trains one probe per contributor).
    """
    return train_encoded(
        base,
        encode_all(examples, base.tokenizer, hp.seq_len),
        hp,
        token_budget=token_budget,
        on_step=on_step,
        adapter=adapter,
    )


def train_encoded(
    base: BaseModel,
    encoded: Sequence[Encoded],
    hp: LoraHyperparams,
    *,
    token_budget: int | None = None,
    on_step: StepCallback | None = None,
    adapter: PeftModel | None = None,
) -> TrainResult:
    """:func:`train_lora` on examples already encoded (at most ``hp.seq_len`` tokens each).

    The gate encodes every contribution once; its probes and the joint run reuse that.
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    if not encoded:
        raise NothingToTrainError(
            f"no training example has a loss-carrying token within {hp.seq_len} tokens"
        )
    if max(len(e.input_ids) for e in encoded) > hp.seq_len:
        raise ValueError(f"an encoded example is longer than seq_len {hp.seq_len}")
    encoded = list(encoded)
    steps_per_epoch = math.ceil(len(encoded) / hp.batch_size)
    total_steps = hp.max_steps or steps_per_epoch * hp.epochs
    if token_budget is not None:
        mean_step_tokens = sum(len(e.input_ids) for e in encoded) / steps_per_epoch
        total_steps = max(1, min(total_steps, int(token_budget // max(mean_step_tokens, 1))))
    if adapter is None:
        model = attach_lora(base, hp)
    elif _lora_shape(adapter.peft_config[adapter.active_adapter]) != _lora_shape(
        _lora_config(base, hp)
    ):
        raise ValueError("the adapter passed in has another LoRA shape than these hyperparameters")
    else:
        model = adapter
        init_lora(model, hp.seed)
    try:
        return _optimise(base, model, encoded, hp, total_steps, on_step)
    except BaseException:
        model.train(False)
        if adapter is None:  # a failed run leaves the base model as it found it
            detach_lora(model)
        raise


def _optimise(
    base: BaseModel,
    model: PeftModel,
    encoded: list[Encoded],
    hp: LoraHyperparams,
    total_steps: int,
    on_step: StepCallback | None,
) -> TrainResult:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=hp.learning_rate, weight_decay=0.0, fused=base.device.type in ("cpu", "cuda")
    )

    def schedule(step: int) -> float:
        if step < hp.warmup_steps:
            return (step + 1) / (hp.warmup_steps + 1)
        remaining = max(total_steps - hp.warmup_steps, 1)
        return max(0.0, 1.0 - (step - hp.warmup_steps) / remaining)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    tokens, loss_value, first_loss, start = 0, float("nan"), float("nan"), time.perf_counter()
    rng = random.Random(hp.seed)
    plan: list[list[int]] = []
    for step in range(total_steps):
        if not plan:
            plan = plan_epoch(len(encoded), hp.batch_size, rng)
        chosen = [encoded[i] for i in plan.pop()]
        # Rows as wide as the step's longest example: packing only fills room left anyway.
        batch = collate(pack(chosen, max(len(e.input_ids) for e in chosen)), base.pad_id)
        loss, _ = token_loss(model, batch, base.device)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch.tokens
        loss_value = float(loss.detach())
        if step == 0:
            first_loss = loss_value
        if on_step is not None:
            on_step(step + 1, total_steps, loss_value)
    model.train(False)
    seconds = time.perf_counter() - start
    return TrainResult(model, total_steps, tokens, seconds, loss_value, first_loss)
