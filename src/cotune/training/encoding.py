"""Examples to token ids, with loss masks and sequence packing.

Chat examples go through the tokenizer's chat template with loss on assistant tokens
only; ``text`` examples carry loss everywhere.

Text is cut to ``MAX_CHARS_PER_TOKEN`` characters per token of the sequence length
*before* it is tokenised, and rendering stops once the sequence is full or the rendered
conversation is that long, so a hostile megabyte-long line, or one of hundreds of empty
turns, costs what an example at the sequence length costs.
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
MAX_CHARS_PER_TOKEN = 32
"""Characters kept per token of ``max_length``: real text averages 3-5 characters a token,
so what is cut could only matter for tokens averaging more than this."""


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
    keep = max_length * MAX_CHARS_PER_TOKEN
    if example.kind == "text":
        text_ids = _ids(tokenizer, example.text[:keep]) + ([int(eos)] if eos is not None else [])
        return Encoded(text_ids[:max_length], text_ids[:max_length])
    ids: list[int] = []
    labels: list[int] = []
    turns = [{"role": m.role, "content": m.content[:keep]} for m in example.messages]
    rendered = ""
    for i, turn in enumerate(turns):
        if len(ids) >= max_length or len(rendered) > keep:
            break  # later turns fall past the truncation
        if turn["role"] != "assistant":
            continue
        prompt = _chat(tokenizer, turns[:i], prompt=True)
        full = _chat(tokenizer, turns[: i + 1], prompt=False)
        if not prompt.startswith(rendered) or not full.startswith(prompt):
            raise ValueError("the chat template does not render turns as a growing prefix")
        # What lies past ``keep`` characters lies past the truncation: never tokenised.
        context, reply = prompt[len(rendered) :][:keep], full[len(prompt) :][:keep]
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
    """Tensors for one optimisation step.

    ``attention_mask`` is ``(rows, width)`` when every row holds one example, and a
    boolean ``(rows, 1, width, width)`` block-diagonal causal mask when a row holds
    several, so packed examples never attend to each other.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    tokens: int
    """Real (non-padding) tokens in the batch."""


def pack(encoded: Sequence[Encoded], width: int) -> list[list[Encoded]]:
    """Lay examples into rows of at most ``width`` tokens, first-fit by decreasing length.

    Examples are never split (one longer than ``width`` gets a row of its own), so every
    label stays next to its own context; short examples fill the room long ones leave.
    """
    rows: list[list[Encoded]] = []
    room: list[int] = []
    for example in sorted(encoded, key=lambda e: len(e.input_ids), reverse=True):
        size = len(example.input_ids)
        slot = next((i for i, free in enumerate(room) if free >= size), None)
        if slot is None:
            rows.append([example])
            room.append(width - size)
        else:
            rows[slot].append(example)
            room[slot] -= size
    return rows


def collate(rows: Sequence[Sequence[Encoded]], pad_id: int) -> Batch:
    """Right-pad rows of examples to the longest row; positions restart at each example.

    The first token of every example carries no loss: in a packed row it would otherwise
    be predicted from the end of the example before it.
    """
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        offset = 0
        for j, example in enumerate(row):
            end = offset + len(example.input_ids)
            input_ids[i, offset:end] = torch.tensor(example.input_ids)
            labels[i, offset + 1 : end] = torch.tensor(example.labels[1:], dtype=torch.long)
            positions[i, offset:end] = torch.arange(end - offset)
            segments[i, offset:end] = j
            offset = end
    real = segments >= 0
    mask = real.long() if all(len(row) == 1 for row in rows) else segment_mask(segments)
    return Batch(input_ids, mask, positions, labels, int(real.sum()))


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean ``(rows, 1, width, width)`` attention: causal within each segment id.

    Padding (segment -1) attends to itself only, so no softmax row is empty.
    """
    width = segments.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    same = segments[:, :, None] == segments[:, None, :]
    mask = (same & causal & (segments >= 0)[:, :, None]) | torch.eye(width, dtype=torch.bool)
    return mask[:, None]
