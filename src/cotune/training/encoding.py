"""Examples to token ids, with loss masks and sequence packing.

Chat examples go through the tokenizer's chat template with loss on assistant tokens
only; ``text`` examples carry loss everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from cotune.training.data import Example

IGNORE_INDEX = -100
"""Label of a token that carries no loss."""


@dataclass(frozen=True)
class Encoded:
    """One example's ids and labels (``IGNORE_INDEX`` where there is no loss)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def loss_tokens(self) -> int:
        """How many tokens carry loss (the first token never does: nothing predicts it)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


def _chat(tokenizer: PreTrainedTokenizerBase, turns: list[dict[str, str]], prompt: bool) -> str:
    if not turns:
        if not prompt:
            return ""
        # Templates refuse an empty conversation: the generation prompt alone is what a
        # one-turn conversation gains when the prompt is added.
        probe = [{"role": "user", "content": "x"}]
        return _chat(tokenizer, probe, prompt=True)[len(_chat(tokenizer, probe, prompt=False)) :]
    text: Any = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=prompt)
    return str(text)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def encode_example(
    example: Example, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Encoded:
    """Token ids and labels of one example, truncated to ``max_length``.

    Chat turns are rendered by the tokenizer's own template; each assistant reply (its
    content and end marker, not the role header) carries loss, nothing else does.
    """
    eos = tokenizer.eos_token_id
    if example.kind == "text":
        text_ids = _ids(tokenizer, example.text) + ([int(eos)] if eos is not None else [])
        return Encoded(text_ids[:max_length], text_ids[:max_length])
    ids: list[int] = []
    labels: list[int] = []
    turns = [{"role": m.role, "content": m.content} for m in example.messages]
    rendered = ""
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        prompt = _chat(tokenizer, turns[:i], prompt=True)
        full = _chat(tokenizer, turns[: i + 1], prompt=False)
        if not prompt.startswith(rendered) or not full.startswith(prompt):
            raise ValueError("the chat template does not render turns as a growing prefix")
        context, reply = prompt[len(rendered) :], full[len(prompt) :]
        context_ids, reply_ids = _ids(tokenizer, context), _ids(tokenizer, reply)
        ids += context_ids + reply_ids
        labels += [IGNORE_INDEX] * len(context_ids) + reply_ids
        rendered = full
    return Encoded(ids[:max_length], labels[:max_length])


def encode_all(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[Encoded]:
    """Encode every example; drop those left with no loss token after truncation."""
    encoded = (encode_example(e, tokenizer, max_length) for e in examples)
    return [e for e in encoded if e.loss_tokens > 0]


@dataclass(frozen=True)
class Batch:
    """Tensors for one optimisation step."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int(self.attention_mask.sum())


def pack(encoded: Sequence[Encoded], block_size: int) -> list[Encoded]:
    """Greedily concatenate whole examples into blocks of at most ``block_size`` tokens.

    Examples are never split, so every label stays next to its own context.
    """
    blocks: list[Encoded] = []
    ids: list[int] = []
    labels: list[int] = []
    for example in encoded:
        if ids and len(ids) + len(example.input_ids) > block_size:
            blocks.append(Encoded(ids, labels))
            ids, labels = [], []
        ids = ids + example.input_ids
        labels = labels + example.labels
    if ids:
        blocks.append(Encoded(ids, labels))
    return blocks


def collate(rows: Sequence[Encoded], pad_id: int) -> Batch:
    """Right-pad rows to the longest one."""
    width = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        mask[i, :n] = 1
    return Batch(input_ids, mask, labels)
