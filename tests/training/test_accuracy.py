"""Task accuracy: keys, matching, greedy replies of base and adapter, per tag."""

from __future__ import annotations

import json

import pytest
from training_helpers import to_examples

from cotune.training.accuracy import (
    carries,
    key_content,
    normalise,
    stop_token_ids,
    task_accuracy,
)
from cotune.training.base_model import BaseModel
from cotune.training.config import LoraHyperparams
from cotune.training.data import Example, Message, validate_lines
from cotune.training.evaluate import evaluate
from cotune.training.trainer import detach_lora, train_lora

DAYS = ("now", "today")


def chat(question: str, reply: str, **labels: str) -> Example:
    return Example("messages", (Message("user", question), Message("assistant", reply)), **labels)


def test_matching_folds_case_and_punctuation_and_wants_whole_words() -> None:
    assert normalise("Triage:  URGENT!") == " triage urgent "
    assert carries("Triage: urgent.", "urgent")
    assert carries("the answer is 5280 seconds", "5280 seconds.")
    assert not carries("Triage: urgently", "urgent")
    assert not carries("15280 seconds", "5280 seconds")
    assert not carries("anything", "...")  # a key with no word in it matches nothing


def test_the_key_is_the_answer_field_else_the_final_reply() -> None:
    assert key_content(chat("q", "Triage: soon.")) == "Triage: soon."
    assert key_content(chat("q", "Triage: soon.", answer="soon")) == "soon"
    assert key_content(Example("text", text="plain")) is None
    assert key_content(Example("messages", (Message("user", "q"),))) is None


def test_answer_and_tag_fields_are_read_and_checked() -> None:
    good = {"instruction": "i", "output": "o", "answer": "o", "tag": "units"}
    lines = [
        json.dumps(good),
        json.dumps({"text": "t", "tag": "prose"}),
        json.dumps({"text": "t", "answer": "x"}),
        json.dumps({"instruction": "i", "output": "o", "tag": 3}),
        json.dumps({"instruction": "i", "output": "o", "answer": " "}),
    ]
    examples, report = validate_lines(lines, "f")
    assert [(e.answer, e.tag) for e in examples] == [("o", "units"), (None, "prose")]
    assert [(e.line, e.field) for e in report.errors] == [(3, "answer"), (4, "tag"), (5, "answer")]


def test_the_tiny_template_stops_at_the_end_of_turn_marker(base: BaseModel) -> None:
    tokenizer = base.tokenizer
    assert stop_token_ids(tokenizer) == sorted(
        {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    )


def test_accuracy_counts_what_an_adapter_learned_overall_and_per_tag(base: BaseModel) -> None:
    # Every training reply is "zorblat.": the adapter learns that much, which is right for
    # the sky vault and wrong for the grass vault, so the per-tag accuracy tells them apart.
    train = [chat(f"Which code opens the sky vault? ({n})", "zorblat.") for n in range(48)]
    held_out = [
        *(chat(f"Which code opens the sky vault, {d}?", "zorblat.", tag="sky") for d in DAYS),
        *(chat(f"Which code opens the grass vault, {d}?", "quimmel.", tag="grass") for d in DAYS),
        Example("text", text="not scored", tag="prose"),
    ]
    before = task_accuracy(base, held_out)
    assert (before.total, before.correct) == (4, 0)
    result = train_lora(base, train, LoraHyperparams(epochs=4, learning_rate=1e-2))
    try:
        after = task_accuracy(base, held_out, model=result.model)
        again = task_accuracy(base, held_out, model=result.model, batch_size=1)
        scored = evaluate(base, held_out, model=result.model, accuracy=True)
    finally:
        detach_lora(result.model)
    assert [s.reply for s in after.samples] == ["zorblat."] * 4
    assert (after.correct, after.total, after.accuracy) == (2, 4, 0.5)
    assert after.by_tag == {"sky": (2, 2), "grass": (0, 2)}
    assert (after.tag_accuracy("sky"), after.tag_accuracy("grass")) == (1.0, 0.0)
    assert [s.reply for s in again.samples] == [s.reply for s in after.samples]  # greedy
    assert scored.task_accuracy == after
    assert scored.to_dict()["task_accuracy"]["by_tag"]["grass"] == {
        "accuracy": 0.0,
        "correct": 0,
        "scored": 2,
    }
    assert not base.model.training


def test_max_prompts_bounds_the_work(base: BaseModel) -> None:
    examples = to_examples([{"instruction": f"q{i}", "output": "a"} for i in range(10)])
    assert task_accuracy(base, examples, max_prompts=3).total == 3
    assert evaluate(base, examples).task_accuracy is None
    assert "task_accuracy" not in evaluate(base, examples).to_dict()


@pytest.mark.parametrize("pad", [None, "<|endoftext|>"])
def test_a_tokenizer_without_a_pad_token_still_batches(base: BaseModel, pad: str | None) -> None:
    tokenizer = base.tokenizer
    original = tokenizer.pad_token
    tokenizer.pad_token = pad
    try:
        result = task_accuracy(base, [chat("a", "b"), chat("longer question", "c")])
    finally:
        tokenizer.pad_token = original
    assert result.total == 2
    assert tokenizer.padding_side == "right"
