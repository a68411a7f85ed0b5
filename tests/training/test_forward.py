"""Token losses on loss-carrying positions: the same loss and gradients as a full forward pass."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch.nn import functional
from training_helpers import to_examples
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from cotune.training import forward
from cotune.training.base_model import BaseModel
from cotune.training.config import DEFAULT_TARGET_MODULES, LoraHyperparams
from cotune.training.encoding import IGNORE_INDEX, Batch, Encoded, collate, encode_all, pack
from cotune.training.synthetic import DemoData
from cotune.training.trainer import attach_lora, detach_lora


def reference_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy from the full logits of an ordinary forward pass."""
    mask = batch.attention_mask
    if mask.dim() == 4:
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    logits = model(
        input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids
    ).logits
    return functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch.labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def batches(encoded: Sequence[Encoded], pad_id: int) -> list[Batch]:
    """One example per padded row, and packed rows (several examples, block-diagonal)."""
    single = collate([[e] for e in encoded[:6]], pad_id)
    packed_rows = pack(encoded[6:18], 2 * max(len(e.input_ids) for e in encoded[6:18]))
    assert any(len(row) > 1 for row in packed_rows)
    return [single, collate(packed_rows, pad_id)]


def randomise_lora_b(model: torch.nn.Module) -> None:
    """LoRA B starts at zero; give it values so the adapter changes the output."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def assert_same_loss_and_gradients(model: torch.nn.Module, batch: Batch) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    expected = reference_loss(model, batch)
    expected_grads = torch.autograd.grad(expected, params)
    loss, count = forward.token_loss(model, batch, torch.device("cpu"))
    grads = torch.autograd.grad(loss, params)
    assert count == int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.fixture
def encoded(base: BaseModel, demo: DemoData) -> list[Encoded]:
    records = [r for rs in demo.contributors.values() for r in rs[:6]] + demo.eval_set[:6]
    return encode_all(to_examples(records), base.tokenizer, 256)


@pytest.fixture
def tuned(base: BaseModel) -> Iterator[PeftModel]:
    """``cotune-tiny`` with a LoRA adapter that changes its output."""
    model = attach_lora(base, LoraHyperparams())
    randomise_lora_b(model)
    try:
        yield model
    finally:
        detach_lora(model)


def test_cotune_tiny_takes_the_pruned_path(base: BaseModel) -> None:
    assert base.model.config.model_type in forward.LAST_LAYER_LAYOUTS
    assert forward.prunes_last_layer(base.model)


def test_pruned_loss_matches_a_full_forward_pass(
    base: BaseModel, tuned: PeftModel, encoded: list[Encoded]
) -> None:
    for batch in batches(encoded, base.pad_id):
        assert_same_loss_and_gradients(tuned, batch)


def test_the_fallback_matches_a_full_forward_pass(
    base: BaseModel, tuned: PeftModel, encoded: list[Encoded], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forward, "LAST_LAYER_LAYOUTS", frozenset())
    assert not forward.prunes_last_layer(tuned)
    for batch in batches(encoded, base.pad_id):
        assert_same_loss_and_gradients(tuned, batch)


def test_eager_attention_gets_an_additive_packing_mask(
    base: BaseModel, encoded: list[Encoded]
) -> None:
    """Eager attention adds a 4-D mask: a boolean one would let packed examples mix."""
    eager: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        base.path, attn_implementation="eager", local_files_only=True
    )
    assert not forward.prunes_last_layer(eager)
    for batch in batches(encoded, base.pad_id):
        with torch.no_grad():
            got = forward.token_loss(eager, batch, torch.device("cpu"))[0]
            want = forward.token_loss(base.model, batch, base.device)[0]
        assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_a_llama_model_takes_the_pruned_path(base: BaseModel, encoded: list[Encoded]) -> None:
    config = LlamaConfig(
        vocab_size=len(base.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    llama = get_peft_model(
        LlamaForCausalLM(config), LoraConfig(r=4, target_modules=list(DEFAULT_TARGET_MODULES))
    )
    randomise_lora_b(llama)
    assert forward.prunes_last_layer(llama)
    for batch in batches(encoded, base.pad_id):
        assert_same_loss_and_gradients(llama, batch)


def test_sum_reduction_is_the_mean_times_the_count(base: BaseModel, encoded: list[Encoded]) -> None:
    batch = batches(encoded, base.pad_id)[1]
    with torch.no_grad():
        mean, count = forward.token_loss(base.model, batch, base.device)
        total, same = forward.token_loss(base.model, batch, base.device, reduction="sum")
    assert same == count > 0
    assert total.item() == pytest.approx(mean.item() * count, rel=1e-5)
