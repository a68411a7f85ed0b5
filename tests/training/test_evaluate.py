"""``TopLayerEval``: adapters on the top layers, evaluated without re-running the layers below."""

from __future__ import annotations

import re

import pytest
from peft import PeftModel
from training_helpers import to_examples

from cotune.training import evaluate as evaluation
from cotune.training import forward
from cotune.training.base_model import BaseModel
from cotune.training.config import LoraHyperparams
from cotune.training.encoding import Encoded, encode_all
from cotune.training.evaluate import TopLayerEval, evaluate_encoded
from cotune.training.synthetic import DemoData
from cotune.training.trainer import detach_lora, train_lora


@pytest.fixture(scope="module")
def eval_encoded(tiny_base: BaseModel, demo: DemoData) -> list[Encoded]:
    return encode_all(to_examples(demo.eval_set), tiny_base.tokenizer, 256)


def trained(base: BaseModel, demo: DemoData, last_layers: int) -> PeftModel:
    """A short run on one contributor, so the adapter moves the eval loss."""
    examples = to_examples(demo.contributors["contributor_1_clinic"][:48])
    hp = LoraHyperparams(max_steps=4, learning_rate=1e-2, last_layers=last_layers)
    return train_lora(base, examples, hp).model


def test_the_base_eval_is_a_full_evaluation(
    base: BaseModel, eval_encoded: list[Encoded], monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluator = TopLayerEval(base, eval_encoded, layers=1)
    assert evaluator.states is not None
    assert evaluator.first_layer == base.model.config.num_hidden_layers - 1
    monkeypatch.setattr(forward, "LAST_LAYER_LAYOUTS", frozenset())  # every layer, in full
    full = evaluate_encoded(base, eval_encoded)
    assert evaluator.base_eval.loss == pytest.approx(full.loss, rel=1e-6)
    assert (evaluator.base_eval.tokens, evaluator.base_eval.examples) == (full.tokens, 60)


def test_a_top_layer_adapter_scores_as_in_a_full_evaluation(
    base: BaseModel, demo: DemoData, eval_encoded: list[Encoded]
) -> None:
    evaluator = TopLayerEval(base, eval_encoded, layers=1)
    model = trained(base, demo, last_layers=1)
    try:
        got = evaluator.evaluate(model)
        want = evaluate_encoded(base, eval_encoded, model=model)
        with pytest.raises(ValueError, match="the base model carries LoRA layers"):
            TopLayerEval(base, eval_encoded, layers=1)  # its base eval would include them
    finally:
        detach_lora(model)
    assert got.loss == pytest.approx(want.loss, rel=1e-6)
    assert (got.tokens, got.examples) == (want.tokens, want.examples)
    assert got.loss < evaluator.base_eval.loss


def test_an_adapter_below_the_top_layers_is_refused(
    base: BaseModel, demo: DemoData, eval_encoded: list[Encoded]
) -> None:
    evaluator = TopLayerEval(base, eval_encoded, layers=1)
    everything = TopLayerEval(base, eval_encoded, layers=0)
    assert everything.first_layer == 0
    model = trained(base, demo, last_layers=0)
    try:
        below = list(range(base.model.config.num_hidden_layers - 1))
        refusal = re.escape(f"changes layers {below}, below the evaluated top layers (from")
        with pytest.raises(ValueError, match=refusal):
            evaluator.evaluate(model)
        want = evaluate_encoded(base, eval_encoded, model=model).loss
        assert everything.evaluate(model).loss == pytest.approx(want, rel=1e-6)
    finally:
        detach_lora(model)


@pytest.mark.parametrize("no_cache", ["other layout", "too large"])
def test_without_a_cache_every_evaluation_runs_in_full(
    base: BaseModel,
    demo: DemoData,
    eval_encoded: list[Encoded],
    monkeypatch: pytest.MonkeyPatch,
    no_cache: str,
) -> None:
    cached = TopLayerEval(base, eval_encoded, layers=1)
    if no_cache == "other layout":
        monkeypatch.setattr(forward, "LAST_LAYER_LAYOUTS", frozenset())
    else:
        monkeypatch.setattr(evaluation, "STATE_CACHE_LIMIT", 0)
    full = TopLayerEval(base, eval_encoded, layers=1)
    assert full.states is None
    assert full.base_eval.loss == pytest.approx(cached.base_eval.loss, rel=1e-5)
    model = trained(base, demo, last_layers=1)
    try:
        assert full.evaluate(model).loss == pytest.approx(cached.evaluate(model).loss, rel=1e-5)
    finally:
        detach_lora(model)
