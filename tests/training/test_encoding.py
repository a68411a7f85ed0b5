"""Encoding: loss on assistant tokens only, truncation, packing and collation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerFast

from cotune.training.base_model import BaseModel
from cotune.training.data import Example, Message
from cotune.training.encoding import (
    IGNORE_INDEX,
    MAX_CHARS_PER_TOKEN,
    Encoded,
    collate,
    encode_all,
    encode_example,
    pack,
)
from cotune.training.tiny import build_tokenizer

END = "<|im_end|>\n"
"""What closes every turn of the tiny model's chat template."""


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """The tiny model's byte-level tokenizer (built in memory, no model needed)."""
    return build_tokenizer()


def chat(*turns: tuple[str, str]) -> Example:
    return Example("messages", tuple(Message(role, content) for role, content in turns))


def labelled_runs(encoded: Encoded) -> list[list[int]]:
    """The maximal runs of consecutive loss-carrying tokens."""
    runs: list[list[int]] = []
    previous_ignored = True
    for label in encoded.labels:
        if label == IGNORE_INDEX:
            previous_ignored = True
            continue
        if previous_ignored:
            runs.append([])
        runs[-1].append(label)
        previous_ignored = False
    return runs


def rendered_ids(tokenizer: PreTrainedTokenizerFast, example: Example) -> list[int]:
    turns = [{"role": m.role, "content": m.content} for m in example.messages]
    text = str(tokenizer.apply_chat_template(turns, tokenize=False))
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_chat_labels_cover_exactly_the_assistant_replies(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    example = chat(
        ("system", "You triage."),
        ("user", "Chest pain for 2 days?"),
        ("assistant", "Triage: urgent."),
        ("user", "And a sore throat?"),
        ("assistant", "Triage: routine."),
    )
    encoded = encode_example(example, tokenizer, max_length=1024)
    assert encoded.input_ids == rendered_ids(tokenizer, example)
    assert len(encoded.labels) == len(encoded.input_ids)
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        assert label in (IGNORE_INDEX, token)
    decoded = [tokenizer.decode(run) for run in labelled_runs(encoded)]
    assert decoded == ["Triage: urgent." + END, "Triage: routine." + END]
    assert encoded.loss_tokens == sum(len(run) for run in labelled_runs(encoded))
    # The role header of the reply ("<|im_start|>assistant\n") carries no loss.
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    first = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    assert encoded.input_ids[first - len(header) : first] == header
    assert set(encoded.labels[first - len(header) : first]) == {IGNORE_INDEX}


def test_instruction_examples_are_chats_with_one_labelled_reply(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    example = Example(
        "instruction", (Message("user", "Convert.\n\n2 km to m"), Message("assistant", "2000 m"))
    )
    encoded = encode_example(example, tokenizer, max_length=1024)
    assert [tokenizer.decode(run) for run in labelled_runs(encoded)] == ["2000 m" + END]


def test_trailing_user_turn_carries_no_loss(tokenizer: PreTrainedTokenizerFast) -> None:
    example = chat(("user", "q"), ("assistant", "a"), ("user", "follow-up"))
    encoded = encode_example(example, tokenizer, max_length=1024)
    assert [tokenizer.decode(run) for run in labelled_runs(encoded)] == ["a" + END]
    # Turns after the last assistant reply are not encoded: they could teach nothing.
    assert str(tokenizer.decode(encoded.input_ids)).endswith("a" + END)


roles = st.sampled_from(["system", "user", "assistant"])
contents = st.text(st.characters(codec="utf-8"), max_size=30)


@given(
    st.tuples(st.sampled_from(["system", "user"]), contents),
    st.lists(st.tuples(roles, contents), max_size=6),
)
def test_labels_are_ignore_exactly_off_assistant_replies(
    tokenizer: PreTrainedTokenizerFast, opening: tuple[str, str], turns: list[tuple[str, str]]
) -> None:
    turns = [opening, *turns, ("assistant", "final answer")]
    example = chat(*turns)
    encoded = encode_example(example, tokenizer, max_length=10_000)
    assert encoded.input_ids == rendered_ids(tokenizer, example)
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        assert label in (IGNORE_INDEX, token)
    replies = [content + END for role, content in turns if role == "assistant"]
    assert [tokenizer.decode(run) for run in labelled_runs(encoded)] == replies


def test_an_opening_assistant_turn_has_no_loss_on_its_header(
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    example = chat(("assistant", "Hello, how can I help?"), ("user", "Hi."), ("assistant", "Ok."))
    encoded = encode_example(example, tokenizer, max_length=1024)
    assert encoded.input_ids == rendered_ids(tokenizer, example)
    assert [tokenizer.decode(run) for run in labelled_runs(encoded)] == [
        "Hello, how can I help?" + END,
        "Ok." + END,
    ]


def test_text_examples_carry_loss_on_every_token(tokenizer: PreTrainedTokenizerFast) -> None:
    encoded = encode_example(Example("text", text="Plain words, ünïcode."), tokenizer, 1024)
    assert encoded.labels == encoded.input_ids
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(encoded.input_ids[:-1]) == "Plain words, ünïcode."
    assert encoded.loss_tokens == len(encoded.input_ids) - 1  # nothing predicts the first


@pytest.mark.parametrize("max_length", [1, 5, 17, 40])
def test_truncation_keeps_a_prefix(tokenizer: PreTrainedTokenizerFast, max_length: int) -> None:
    examples = [
        Example("text", text="a fairly long sentence about rivers and stones"),
        chat(("user", "What is the capital of Velmor?"), ("assistant", "Tarsk.")),
    ]
    for example in examples:
        full = encode_example(example, tokenizer, 10_000)
        cut = encode_example(example, tokenizer, max_length)
        assert len(cut.input_ids) == min(max_length, len(full.input_ids))
        assert cut.input_ids == full.input_ids[:max_length]
        assert cut.labels == full.labels[:max_length]


def test_encode_all_drops_examples_left_without_loss(tokenizer: PreTrainedTokenizerFast) -> None:
    long_prompt = chat(("user", "x" * 100), ("assistant", "short"))
    text = Example("text", text="kept")
    encoded = encode_all([long_prompt, text], tokenizer, max_length=50)
    assert len(encoded) == 1
    assert encoded[0].labels == encoded[0].input_ids
    assert len(encode_all([long_prompt, text], tokenizer, max_length=500)) == 2


def test_a_template_that_is_not_a_growing_prefix_is_refused() -> None:
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(ValueError, match="growing prefix"):
        encode_example(chat(("user", "q"), ("assistant", "a")), tokenizer, 100)


def test_the_saved_tokenizer_encodes_like_the_built_one(tiny_base: BaseModel) -> None:
    built = build_tokenizer()
    example = chat(("system", "s"), ("user", "héllo"), ("assistant", "wörld"))
    assert encode_example(example, tiny_base.tokenizer, 512) == encode_example(example, built, 512)
    assert tiny_base.pad_id == built.pad_token_id


# ---- packing and collation -------------------------------------------------------------


def numbered(lengths: list[int]) -> list[Encoded]:
    """Example ``i`` is ``lengths[i]`` copies of token ``i`` (labels: ``-i - 1``)."""
    return [Encoded([i] * n, [-i - 1] * n) for i, n in enumerate(lengths)]


@given(st.integers(8, 64).flatmap(lambda b: st.tuples(st.just(b), st.lists(st.integers(1, b)))))
def test_pack_fits_rows_and_never_splits(case: tuple[int, list[int]]) -> None:
    width, lengths = case
    examples = numbered(lengths)
    rows = pack(examples, width)
    placed = sorted(e.input_ids[0] for row in rows for e in row)
    assert placed == list(range(len(lengths)))  # every example once, whole
    for row in rows:
        assert 0 < sum(len(e.input_ids) for e in row) <= width
    # First fit: no example would have fitted in an earlier row than the one it is in.
    room = [width - sum(len(e.input_ids) for e in row) for row in rows]
    for later, row in enumerate(rows):
        for example in row[1:]:
            assert all(room[i] < len(example.input_ids) for i in range(later))


@given(st.lists(st.integers(1, 40), min_size=1), st.integers(8, 16))
def test_pack_gives_an_oversized_example_a_row_of_its_own(lengths: list[int], width: int) -> None:
    for row in pack(numbered(lengths), width):
        if sum(len(e.input_ids) for e in row) > width:
            assert len(row) == 1


def test_pack_of_nothing_is_nothing() -> None:
    assert pack([], 16) == []


def test_collate_keeps_packed_examples_apart() -> None:
    first, second = Encoded([5, 6, 7], [5, 6, 7]), Encoded([8, 9], [8, 9])
    batch = collate([[first, second], [Encoded([4], [4])]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [4, 0, 0, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 0, 0, 0, 0]]
    # Each example's first token is never a target: nothing of its own precedes it.
    assert batch.labels.tolist()[0] == [IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]
    assert batch.tokens == 6
    mask = batch.attention_mask[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 1, 1],
    ]
    assert batch.attention_mask[1, 0, :, 0].tolist() == [True, False, False, False, False]


def test_packed_rows_give_the_same_loss_as_one_example_per_row(tiny_base: BaseModel) -> None:
    encoded = encode_all(
        [Example("text", text="alpha beta"), Example("text", text="gamma")],
        tiny_base.tokenizer,
        64,
    )
    net = tiny_base.model

    def loss(rows: list[list[Encoded]]) -> float:
        batch = collate(rows, tiny_base.pad_id)
        with torch.no_grad():
            return float(
                net(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    labels=batch.labels,
                ).loss
            )

    assert loss([encoded]) == pytest.approx(loss([[e] for e in encoded]), abs=1e-5)


@given(st.lists(st.integers(1, 12), min_size=1, max_size=6), st.integers(0, 300))
def test_collate_right_pads_every_row(lengths: list[int], pad_id: int) -> None:
    rows = [Encoded(list(range(1, n + 1)), [IGNORE_INDEX, *range(2, n + 1)]) for n in lengths]
    batch = collate([[r] for r in rows], pad_id)
    width = max(lengths)
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
    assert batch.input_ids.shape == batch.position_ids.shape == (len(rows), width)
    assert batch.input_ids.dtype == batch.labels.dtype == batch.attention_mask.dtype == torch.long
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        assert batch.input_ids[i, :n].tolist() == row.input_ids
        assert batch.labels[i, :n].tolist() == row.labels
        assert batch.attention_mask[i, :n].tolist() == [1] * n
        assert batch.position_ids[i, :n].tolist() == list(range(n))
        assert batch.input_ids[i, n:].tolist() == [pad_id] * (width - n)
        assert batch.labels[i, n:].tolist() == [IGNORE_INDEX] * (width - n)
        assert batch.attention_mask[i, n:].tolist() == [0] * (width - n)
    assert batch.tokens == sum(lengths)


class _MeasuringTokenizer:
    """The tiny tokenizer, recording the length of every text it is asked to encode."""

    def __init__(self, inner: PreTrainedTokenizerFast) -> None:
        self.inner = inner
        self.lengths: list[int] = []

    def __call__(self, text: str, **kwargs: object) -> object:
        self.lengths.append(len(text))
        return self.inner(text, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("kind", ["text", "messages"])
def test_a_megabyte_line_is_cut_before_it_is_tokenised(
    tokenizer: PreTrainedTokenizerFast, kind: str
) -> None:
    huge = "lorem ipsum dolor sit amet " * 40_000  # about 1 MiB
    example = (
        Example("text", text=huge)
        if kind == "text"
        else chat(("user", "q"), ("assistant", huge), ("user", huge), ("assistant", huge))
    )
    spy = _MeasuringTokenizer(tokenizer)
    encoded = encode_example(example, spy, 64)  # type: ignore[arg-type]
    assert max(spy.lengths) <= 64 * MAX_CHARS_PER_TOKEN + 64  # the text, plus a role header
    # The same tokens and labels as tokenising everything, then truncating.
    full = tokenizer(huge, add_special_tokens=False)["input_ids"]
    if kind == "text":
        assert encoded.input_ids == full[:64] == encoded.labels
    else:
        assert len(encoded.input_ids) == 64
        assert [t for t in encoded.labels if t != IGNORE_INDEX] == full[
            : len([t for t in encoded.labels if t != IGNORE_INDEX])
        ]


def test_rendering_stops_once_the_sequence_is_full(tokenizer: PreTrainedTokenizerFast) -> None:
    turns = [("user", "question"), ("assistant", "answer")] * 5_000
    spy = _MeasuringTokenizer(tokenizer)
    encoded = encode_example(chat(*turns), spy, 32)  # type: ignore[arg-type]
    assert len(encoded.input_ids) == 32
    assert len(spy.lengths) <= 8  # a few turns rendered, not ten thousand
