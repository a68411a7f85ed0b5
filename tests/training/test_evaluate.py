"""``TopLayerEval``: adapters on the top layers, evaluated without re-running the layers below."""

from __future__ import annotations

import re
from collections.abc import Iterator

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


@pytest.fixture
def top_adapter(base: BaseModel, demo: DemoData) -> Iterator[PeftModel]:
    model = trained(base, demo, last_layers=1)
    try:
        yield model
    finally:
        detach_lora(model)


def test_the_base_eval_is_the_full_evaluation(base: BaseModel, eval_encoded: list[Encoded]) -> None:
    evaluator = TopLayerEval(base, eval_encoded, layers=1)
    assert evaluator.states is not None
    assert evaluator.first_layer == base.model.config.num_hidden_layers - 1
    assert evaluator.base_eval == evaluate_encoded(base, eval_encoded)


def test_a_top_layer_adapter_scores_as_in_a_full_evaluation(
    base: BaseModel, eval_encoded: list[Encoded], top_adapter: PeftModel
) -> None:
    evaluator = TopLayerEval(base, eval_encoded, layers=1)
    got = evaluator.evaluate(top_adapter)
    want = evaluate_encoded(base, eval_encoded, model=top_adapter)
    assert got.loss == pytest.approx(want.loss, rel=1e-6)
    assert (got.tokens, got.examples) == (want.tokens, want.examples)
    with top_adapter.disable_adapter():
        assert got.loss < evaluate_encoded(base, eval_encoded).loss


def test_cached_states_are_taken_before_any_adapter(
    base: BaseModel, eval_encoded: list[Encoded], top_adapter: PeftModel
) -> None:
    """Built while an adapter is attached, the base eval would include it: build first."""
    with_adapter = TopLayerEval(base, eval_encoded, layers=1).base_eval
    assert with_adapter.loss == pytest.approx(
        evaluate_encoded(base, eval_encoded, model=top_adapter).loss, rel=1e-6
    )


def test_an_adapter_below_the_top_layers_is_refused(
    base: BaseModel, demo: DemoData, eval_encoded: list[Encoded]
) -> None:
    evaluator = TopLayerEval(base, eval_encoded, layers=1)
    model = trained(base, demo, last_layers=0)
    try:
        below = list(range(base.model.config.num_hidden_layers - 1))
        refusal = re.escape(f"changes layers {below}, below the evaluated top layers (from")
        with pytest.raises(ValueError, match=refusal):
            evaluator.evaluate(model)
        everything = TopLayerEval(base, eval_encoded, layers=0)
        assert everything.first_layer == 0
        want = evaluate_encoded(base, eval_encoded, model=model).loss
        assert everything.evaluate(model).loss == pytest.approx(want, rel=1e-6)
    finally:
        detach_lora(model)


@pytest.mark.parametrize("no_cache", ["other layout", "too large"])
def test_without_a_cache_every_evaluation_runs_in_full(
    base: BaseModel,
    eval_encoded: list[Encoded],
    top_adapter: PeftModel,
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
    assert full.evaluate(top_adapter).loss == pytest.approx(
        cached.evaluate(top_adapter).loss, rel=1e-5
    )
