"""Task accuracy: whether the greedy reply to each eval prompt carries the right answer.

Eval loss rewards learning an answer's format as much as its content; accuracy asks
only for the content. An eval example is scored when it has a reply to predict (a chat
or instruction example; ``text`` examples are not): its prompt is every turn before the
final assistant turn, its *key* is the example's ``answer`` field when the file gives
one (the class, the entity, the number), else the final reply itself. A reply is
correct when its normalised text (lower case, punctuation and runs of space folded)
contains the normalised key as whole words. Replies are greedy (deterministic) and at
most a few tokens longer than the reference reply, so scoring costs little more than
one forward pass per generated token. Results are given overall and per ``tag`` (a
contributor's sub-domain) when the eval set is tagged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from cotune.training.base_model import BaseModel
from cotune.training.data import Example

EXTRA_TOKENS = 8
"""Tokens a reply may run past the reference reply's length."""
MAX_NEW_TOKENS = 128
"""Longest reply generated for one prompt."""
_NON_WORD = re.compile(r"[^\w]+")


def normalise(text: str) -> str:
    """Lower case, punctuation and runs of space folded to one space, padded by spaces."""
    return " " + _NON_WORD.sub(" ", text.lower()).strip() + " "


def key_content(example: Example) -> str | None:
    """What a correct reply to ``example`` must contain (None: it has no reply to score)."""
    if example.kind == "text" or not example.messages:
        return None
    if example.messages[-1].role != "assistant":
        return None
    return example.answer if example.answer is not None else example.messages[-1].content


def carries(reply: str, key: str) -> bool:
    """Whether ``reply`` contains ``key`` as whole words, after normalising both."""
    wanted = normalise(key)
    return wanted.strip() != "" and wanted in normalise(reply)


@dataclass(frozen=True)
class Scored:
    """One eval prompt: its key, the model's greedy reply, and whether it carries the key."""

    key: str
    reply: str
    correct: bool
    tag: str | None


@dataclass(frozen=True)
class AccuracyResult:
    """The share of scored eval prompts answered correctly, overall and per tag."""

    correct: int
    total: int
    by_tag: dict[str, tuple[int, int]] = field(default_factory=dict)
    """tag -> (correct, total), for the tagged examples."""
    samples: tuple[Scored, ...] = ()

    @property
    def accuracy(self) -> float:
        """Correct over scored (0 when nothing could be scored)."""
        return self.correct / self.total if self.total else 0.0

    def tag_accuracy(self, tag: str) -> float:
        """Accuracy on the examples tagged ``tag``."""
        correct, total = self.by_tag.get(tag, (0, 0))
        return correct / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (without the replies)."""
        return {
            "accuracy": round(self.accuracy, 6),
            "correct": self.correct,
            "scored": self.total,
            "by_tag": {
                tag: {"accuracy": round(c / t, 6) if t else 0.0, "correct": c, "scored": t}
                for tag, (c, t) in sorted(self.by_tag.items())
            },
        }


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens that end an assistant turn: eos, and what the chat template puts after a reply."""
    marker = "\x00cotune-reply\x00"
    rendered = str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}],
            tokenize=False,
        )
    )
    after = rendered.split(marker, 1)[1] if marker in rendered else ""
    ids = list(tokenizer(after, add_special_tokens=False)["input_ids"])[:1] if after else []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return sorted(set(ids))


def task_accuracy(
    base: BaseModel,
    examples: Sequence[Example],
    *,
    model: torch.nn.Module | None = None,
    batch_size: int = 32,
    max_prompts: int | None = None,
) -> AccuracyResult:
    """Score ``model`` (default: the base model) on every example that has a reply.

    ``max_prompts`` bounds the work on a large eval set: the first that many scorable
    examples are scored (the count is in the result).
    """
    net: Any = model if model is not None else base.model
    tokenizer = base.tokenizer
    scored = [(e, key) for e in examples if (key := key_content(e)) is not None]
    scored = scored[:max_prompts] if max_prompts is not None else scored
    prompts = [_prompt(tokenizer, e) for e, _ in scored]
    budgets = [
        min(MAX_NEW_TOKENS, len(tokenizer(e.messages[-1].content, add_special_tokens=False)[
            "input_ids"]) + EXTRA_TOKENS)
        for e, _ in scored
    ]  # fmt: skip
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    replies: dict[int, str] = {}
    stops = stop_token_ids(tokenizer)
    was_training = net.training
    net.train(False)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            texts = _generate(
                net, tokenizer, [prompts[i] for i in chunk], max(budgets[i] for i in chunk),
                stops, base.device, base.pad_id,
            )  # fmt: skip
            replies.update(zip(chunk, texts, strict=True))
    finally:
        net.train(was_training)
    samples = tuple(
        Scored(key, replies[i], carries(replies[i], key), example.tag)
        for i, (example, key) in enumerate(scored)
    )
    by_tag: dict[str, tuple[int, int]] = {}
    for sample in samples:
        if sample.tag is not None:
            correct, total = by_tag.get(sample.tag, (0, 0))
            by_tag[sample.tag] = (correct + sample.correct, total + 1)
    return AccuracyResult(sum(s.correct for s in samples), len(samples), by_tag, samples)


def _prompt(tokenizer: PreTrainedTokenizerBase, example: Example) -> str:
    turns = [{"role": m.role, "content": m.content} for m in example.messages[:-1]]
    return str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))


def _generate(
    net: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    stops: list[int],
    device: torch.device,
    pad_id: int,
) -> list[str]:
    """Greedy replies to ``prompts`` (left-padded into one batch), special tokens dropped."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad is None:  # some bases have no pad token; eos pads as well (masked out anyway)
        tokenizer.pad_token = tokenizer.eos_token
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side, tokenizer.pad_token = side, pad
    batch = batch.to(device)
    with torch.no_grad():
        out = net.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=pad_id,
        )
    new = out[:, batch["input_ids"].shape[1] :]
    return [str(tokenizer.decode(row, skip_special_tokens=True)) for row in new]
