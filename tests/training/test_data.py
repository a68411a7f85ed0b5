"""JSONL validation: every error path, the report, and round-trip / robustness properties."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cotune.training.data import (
    MAX_REPORTED_ERRORS,
    MAX_STORED_ERRORS,
    DataLimits,
    DatasetValidationError,
    Example,
    LineError,
    Message,
    load_dataset,
    load_jsonl,
    validate_bytes,
    validate_lines,
    write_jsonl,
)

UNKNOWN_SHAPE = 'one of {"messages"}, {"instruction", "input", "output"} or {"text"}'
GOOD_CHAT: dict[str, Any] = {
    "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
}


def only_error(line: str) -> LineError:
    """The single error of a one-line file (asserting there is exactly one)."""
    examples, report = validate_lines([line], "t.jsonl")
    assert examples == []
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


def error_at(line: str, number: int) -> LineError:
    """The single error of ``line`` placed at line ``number`` after valid lines."""
    good = json.dumps({"text": "fine"})
    lines = [good] * (number - 1) + [line, good]
    examples, report = validate_lines(lines, "t.jsonl")
    assert len(examples) == number
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


# (record, field, expected, found): one case per error path of the parser.
ERROR_CASES: dict[str, tuple[Any, str, str, str]] = {
    "non-object: list": ([1, 2], "(line)", "a JSON object", "list"),
    "non-object: string": ("text", "(line)", "a JSON object", "string"),
    "non-object: null": (None, "(line)", "a JSON object", "null"),
    "unknown shape": (
        {"prompt": "a", "completion": "b"},
        "(line)",
        UNKNOWN_SHAPE,
        "completion, prompt",
    ),
    "unknown shape: no keys": ({}, "(line)", UNKNOWN_SHAPE, "no keys"),
    "messages not a list": ({"messages": "hi"}, "messages", "a non-empty list of turns", "string"),
    "messages empty": ({"messages": []}, "messages", "a non-empty list of turns", "list"),
    "messages null": ({"messages": None}, "messages", "a non-empty list of turns", "null"),
    "turn not an object": (
        {"messages": ["hi", {"role": "assistant", "content": "a"}]},
        "messages[0]",
        'an object {"role", "content"}',
        "string",
    ),
    "bad role": (
        {"messages": [{"role": "bot", "content": "a"}, {"role": "assistant", "content": "a"}]},
        "messages[0].role",
        "one of system, user, assistant",
        "'bot'",
    ),
    "missing role": (
        {"messages": [{"role": "assistant", "content": "a"}, {"content": "a"}]},
        "messages[1].role",
        "one of system, user, assistant",
        "None",
    ),
    "non-string content": (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 7}]},
        "messages[1].content",
        "a string",
        "int",
    ),
    "missing content": (
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
        "messages[0].content",
        "a string",
        "null",
    ),
    "no assistant turn": (
        {"messages": [{"role": "user", "content": "q"}]},
        "messages",
        "at least one non-empty assistant turn",
        "",
    ),
    "blank assistant turn": (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " \t"}]},
        "messages",
        "at least one non-empty assistant turn",
        "",
    ),
    "instruction missing": ({"output": "o"}, "instruction", "a string", "null"),
    "instruction empty": (
        {"instruction": "  ", "output": "o"},
        "instruction",
        "a non-empty string",
        "an empty string",
    ),
    "instruction not a string": (
        {"instruction": ["i"], "output": "o"},
        "instruction",
        "a string",
        "list",
    ),
    "input not a string": (
        {"instruction": "i", "input": 3.5, "output": "o"},
        "input",
        "a string (may be empty)",
        "float",
    ),
    "input null": (
        {"instruction": "i", "input": None, "output": "o"},
        "input",
        "a string (may be empty)",
        "null",
    ),
    "output missing": ({"instruction": "i", "input": ""}, "output", "a string", "null"),
    "output empty": (
        {"instruction": "i", "output": ""},
        "output",
        "a non-empty string",
        "an empty string",
    ),
    "output not a string": ({"instruction": "i", "output": {"a": 1}}, "output", "a string", "dict"),
    "text empty": ({"text": "   "}, "text", "a non-empty string", "an empty string"),
    "text not a string": ({"text": True}, "text", "a string", "bool"),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_each_error_path_reports_line_field_and_expected(case: str) -> None:
    record, field, expected, found = ERROR_CASES[case]
    error = error_at(json.dumps(record), 3)
    assert (error.line, error.field, error.expected, error.found) == (3, field, expected, found)
    assert str(error).startswith(f"line 3: {field}: expected {expected}")


def test_invalid_json_reports_the_decoder_message() -> None:
    error = error_at('{"text": "unterminated', 2)
    assert (error.line, error.field, error.expected) == (2, "(line)", "a JSON object")
    assert error.found.startswith("invalid JSON (")
    assert "Unterminated string" in error.found


def test_trailing_garbage_after_an_object_is_invalid_json() -> None:
    error = only_error('{"text": "a"} {"text": "b"}')
    assert error.field == "(line)"
    assert error.found.startswith("invalid JSON (Extra data")


def test_every_bad_turn_of_one_line_is_reported() -> None:
    record = {
        "messages": [
            {"role": "user", "content": 1},
            {"role": "robot", "content": "x"},
            "turn",
            {"role": "assistant", "content": "a"},
        ]
    }
    _, report = validate_lines([json.dumps(record)], "t.jsonl")
    assert [(e.line, e.field) for e in report.errors] == [
        (1, "messages[0].content"),
        (1, "messages[1].role"),
        (1, "messages[2]"),
    ]
    assert report.invalid == 1  # three errors, one bad line


def test_instruction_reports_all_three_fields_at_once() -> None:
    _, report = validate_lines([json.dumps({"instruction": "", "input": 1, "output": None})], "t")
    assert [e.field for e in report.errors] == ["instruction", "input", "output"]


def test_messages_shape_wins_over_the_other_keys() -> None:
    record = {**GOOD_CHAT, "text": "", "instruction": ""}
    examples, report = validate_lines([json.dumps(record)], "t")
    assert report.ok
    assert examples[0].kind == "messages"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b'{"text": "\xff"}\n', 1),
        (b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xc3"}\n{"text": "d"}\n', 3),
        (b'{"text": "a"}\r\n\r\n{"text": "\xe2\x82"}\r\n', 3),
        (b'{"text": "\xc3\xa9 ok"}\n\n\n\n{"text": "\xed\xa0\x80"}', 5),  # a UTF-16 surrogate
    ],
)
def test_non_utf8_bytes_report_the_right_line_and_yield_nothing(data: bytes, line: int) -> None:
    examples, report = validate_bytes(data, "f.jsonl")
    assert examples == []
    assert len(report.errors) == 1
    error = report.errors[0]
    assert (error.line, error.field, error.expected) == (line, "(line)", "UTF-8 text")
    assert error.found.startswith("byte 0x")
    assert not report.ok
    with pytest.raises(DatasetValidationError) as caught:
        load_dataset(data, "f.jsonl")
    assert f"f.jsonl:line {line}: (line): expected UTF-8 text" in str(caught.value)


def test_blank_lines_are_skipped_but_counted() -> None:
    text = '\n{"text": "a"}\n   \n\t\n{"text": "b"}\n\n'
    examples, report = validate_bytes(text.encode(), "f")
    assert [e.text for e in examples] == ["a", "b"]
    assert report.ok
    assert report.lines == 6
    assert (report.valid, report.invalid, report.invalid_rate) == (2, 0, 0.0)


def test_errors_keep_their_original_line_numbers_across_blank_lines() -> None:
    text = '\n\n{"text": "a"}\n\n[]\n'
    _, report = validate_bytes(text.encode(), "f")
    assert [(e.line, e.found) for e in report.errors] == [(5, "list")]


def test_normalisation_of_every_shape() -> None:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        json.dumps({"instruction": "Do it.", "input": "", "output": "done"}),
        json.dumps({"instruction": "Do it.", "output": "done"}),
        json.dumps({"instruction": "Convert.", "input": "2 km", "output": "2000 m"}),
        json.dumps({"text": "plain words"}),
    ]
    examples, report = validate_lines(lines, "f")
    assert report.ok
    chat = Example(
        "messages",
        (Message("system", "be brief"), Message("user", "q"), Message("assistant", "a")),
    )
    done = Example("instruction", (Message("user", "Do it."), Message("assistant", "done")))
    convert = Example(
        "instruction", (Message("user", "Convert.\n\n2 km"), Message("assistant", "2000 m"))
    )
    assert examples == [chat, done, done, convert, Example("text", text="plain words")]
    assert chat.canonical() == "system: be brief\nuser: q\nassistant: a"
    assert examples[-1].canonical() == "plain words"
    assert report.kinds == {"messages": 1, "instruction": 3, "text": 1}


def test_a_file_with_any_bad_line_raises_and_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    good = json.dumps({"text": "fine"})
    path.write_text("\n".join([good, good, '{"text": 5}', good, "nope"]) + "\n")
    with pytest.raises(DatasetValidationError) as caught:
        load_jsonl(path)
    report = caught.value.report
    assert [(e.line, e.field) for e in report.errors] == [(3, "text"), (5, "(line)")]
    assert (report.valid, report.invalid, report.lines) == (3, 2, 5)
    assert report.invalid_rate == pytest.approx(2 / 5)
    assert not report.ok
    message = str(caught.value)
    assert f"{path}:line 3: text: expected a string, found int" in message
    assert message.endswith(f"{path}: 2 of 5 lines invalid (2 errors); 3 valid (3 text)")


def test_an_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    with pytest.raises(DatasetValidationError) as caught:
        load_jsonl(path)
    assert caught.value.report.summary() == f"{path}: empty: no examples"
    assert caught.value.report.errors == []


def test_a_valid_file_loads_with_its_hash(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = [GOOD_CHAT, {"instruction": "i", "output": "o"}, {"text": "t"}]
    path = tmp_path / "ok.jsonl"
    write_jsonl(path, records)
    dataset = load_jsonl(path)
    assert len(dataset) == 3
    assert dataset.source == str(path)
    assert (
        dataset.report.summary() == f"{path}: 3 valid examples (1 instruction, 1 messages, 1 text)"
    )
    assert dataset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_dataset(path.read_bytes(), str(path)) == dataset


def test_report_counts_errors_and_lines_separately() -> None:
    bad_turns = {"messages": [{"role": "x", "content": 1}]}  # 2 errors on one line
    lines = [json.dumps(bad_turns), json.dumps({"text": "a"}), "", "[]"]
    _, report = validate_lines(lines, "src")
    assert len(report.errors) == 3
    assert report.invalid == 2
    assert report.valid == 1
    assert report.summary() == "src: 2 of 3 lines invalid (3 errors); 1 valid (1 text)"


def test_describe_caps_the_listed_errors() -> None:
    lines = ["[]"] * (MAX_REPORTED_ERRORS + 7)
    _, report = validate_lines(lines, "src")
    described = report.describe().splitlines()
    assert len(described) == MAX_REPORTED_ERRORS + 2
    assert described[0] == "src:line 1: (line): expected a JSON object, found list"
    assert described[-2] == "… and 7 more errors"
    assert (
        report.describe(limit=2).splitlines()[-2] == f"… and {MAX_REPORTED_ERRORS + 5} more errors"
    )


def test_deeply_nested_json_line_is_refused_before_decoding() -> None:
    line = '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"
    examples, report = validate_bytes(line.encode(), "hostile.jsonl")
    assert examples == []
    assert [(e.line, e.field) for e in report.errors] == [(1, "(line)")]
    assert "nested more than 64 levels" in report.errors[0].found


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 500 + '\\"{' * 100
    examples, report = validate_bytes(json.dumps({"text": text}).encode(), "brackets.jsonl")
    assert report.ok, report.describe()
    assert examples[0].text == text


# Characters that str.splitlines() treats as line breaks but json.dumps(ensure_ascii=False)
# writes raw inside strings (the other splitlines breaks are control chars JSON escapes).
UNESCAPED_LINE_BREAKS = ("\x85", "\u2028", "\u2029")


@pytest.mark.parametrize("char", UNESCAPED_LINE_BREAKS, ids=["NEL", "LS", "PS"])
def test_unicode_line_separators_inside_strings_round_trip(tmp_path: Path, char: str) -> None:
    path = tmp_path / "sep.jsonl"
    write_jsonl(path, [{"text": f"before{char}after"}])
    assert load_jsonl(path).examples == (Example("text", text=f"before{char}after"),)


# ---- properties -----------------------------------------------------------------------

characters = st.characters(codec="utf-8", exclude_characters="".join(UNESCAPED_LINE_BREAKS))
any_text = st.text(alphabet=characters, max_size=40)
non_blank = any_text.filter(lambda s: bool(s.strip()))
Case = tuple[dict[str, Any], Example]


@st.composite
def chat_records(draw: st.DrawFn) -> Case:
    turns = draw(
        st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), any_text), max_size=4)
    )
    at = draw(st.integers(0, len(turns)))
    turns.insert(at, ("assistant", draw(non_blank)))
    record: dict[str, Any] = {"messages": [{"role": r, "content": c} for r, c in turns]}
    if draw(st.booleans()):
        record["meta"] = draw(any_text)  # extra keys are ignored
    return record, Example("messages", tuple(Message(r, c) for r, c in turns))


@st.composite
def instruction_records(draw: st.DrawFn) -> Case:
    instruction, output = draw(non_blank), draw(non_blank)
    record: dict[str, Any] = {"instruction": instruction, "output": output}
    extra = draw(st.none() | any_text)
    if extra is not None:
        record["input"] = extra
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return record, Example("instruction", (Message("user", prompt), Message("assistant", output)))


@st.composite
def text_records(draw: st.DrawFn) -> Case:
    text = draw(non_blank)
    return {"text": text}, Example("text", text=text)


@given(st.lists(chat_records() | instruction_records() | text_records(), min_size=1, max_size=8))
def test_valid_records_round_trip_through_write_and_load(cases: list[Case]) -> None:
    records = [record for record, _ in cases]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        write_jsonl(path, records)
        dataset = load_jsonl(path)
    assert list(dataset.examples) == [example for _, example in cases]
    assert dataset.report.valid == len(records)
    assert dataset.report.lines == len(records)


def assert_one_line_outcome(line: str) -> None:
    """A single line yields one example, or no example and >= 1 error on line 1."""
    examples, report = validate_lines([line], "fuzz")
    if not line.strip():
        assert (examples, report.errors) == ([], [])
    elif examples:
        assert len(examples) == 1
        assert report.errors == []
    else:
        assert report.errors
        assert {e.line for e in report.errors} == {1}
        assert all(e.field and e.expected for e in report.errors)


@given(st.text(max_size=200))
def test_random_text_lines_never_crash_the_parser(line: str) -> None:
    assert_one_line_outcome(line)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_keys = st.sampled_from(
    ["messages", "instruction", "input", "output", "text", "role", "content"]
)
json_values = st.recursive(
    json_scalars | st.sampled_from(["system", "user", "assistant"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(json_keys | any_text, inner, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_random_json_lines_never_crash_the_parser(value: Any) -> None:
    assert_one_line_outcome(json.dumps(value))


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    examples, report = validate_bytes(data, "fuzz")
    assert all(1 <= e.line <= max(report.lines, 1) for e in report.errors)
    if report.errors:
        with pytest.raises(DatasetValidationError):
            load_dataset(data)
    assert len(examples) == report.valid


# ---- hostile documents: bounded work, one clear error each ----------------------------------


@pytest.mark.parametrize(
    "line",
    [
        '{"text": "a", "n": ' + "9" * 5000 + "}",
        '{"text": ' + "1" * 4301 + "}",
        '{"messages": [{"role": "user", "content": "q"}], "x": [' + "7" * 10_000 + "]}",
    ],
)
def test_an_integer_too_long_for_python_is_an_invalid_line(line: str) -> None:
    error = only_error(line)
    assert (error.field, error.expected) == ("(line)", "a JSON object")
    assert error.found.startswith("invalid JSON (Exceeds the limit (4300 digits)")


def test_a_line_over_its_cap_is_an_error_and_is_not_parsed() -> None:
    limits = DataLimits(max_line_bytes=64)
    long = json.dumps({"text": "é" * 40})  # 40 characters, 80 bytes of UTF-8
    data = f'{{"text": "ok"}}\n{long}\n{{"text": "fine"}}\n'.encode()
    examples, report = validate_bytes(data, "f", limits)
    assert [e.text for e in examples] == ["ok", "fine"]
    assert [(e.line, e.expected, e.found) for e in report.errors] == [
        (2, "a line of at most 64 bytes", f"{len(long.encode())} bytes")
    ]
    _, by_lines = validate_lines(data.decode().splitlines(), "f", limits)
    assert by_lines.errors == report.errors


def test_a_document_over_its_byte_cap_is_refused_unread() -> None:
    examples, report = validate_bytes(b'{"text": "a"}\n' * 10, "f", DataLimits(max_bytes=100))
    assert examples == []
    assert report.over_limit == "140 bytes, over the cap of 100 bytes"
    assert not report.ok
    with pytest.raises(DatasetValidationError, match="over the cap of 100 bytes"):
        load_dataset(b'{"text": "a"}\n' * 10, "f", DataLimits(max_bytes=100))


def test_validation_stops_after_the_example_cap() -> None:
    data = b'{"text": "a"}\n\n[]\n' * 50
    examples, report = validate_bytes(data, "f", DataLimits(max_examples=10))
    assert report.valid + report.invalid == 10
    assert report.over_limit == "more than 10 examples"
    assert not report.ok
    assert len(examples) == 5


def test_a_document_of_blank_lines_keeps_its_line_numbers() -> None:
    data = b"\n" * 1_000_000 + b"[]\n" + b" \t\r\n" * 1000 + b'{"text": "x"}'
    examples, report = validate_bytes(data, "f")
    assert [(e.line, e.found) for e in report.errors] == [(1_000_001, "list")]
    assert [e.text for e in examples] == ["x"]
    assert report.lines == 1_000_000 + 1 + 1000 + 1


def test_errors_stored_are_capped_but_every_bad_line_counts() -> None:
    lines = ["[]"] * (MAX_STORED_ERRORS + 500) + [json.dumps({"text": "a"})]
    _, report = validate_lines(lines, "src")
    assert len(report.errors) == MAX_STORED_ERRORS
    assert report.invalid == MAX_STORED_ERRORS + 500
    assert report.valid == 1
    assert report.describe().splitlines()[-2] == "… and 500 more bad lines, not described"


@given(
    st.binary(max_size=300),
    st.integers(1, 40),
    st.none() | st.integers(1, 8),
    st.none() | st.integers(1, 300),
)
def test_random_bytes_within_caps_never_crash(
    data: bytes, line_cap: int, examples_cap: int | None, bytes_cap: int | None
) -> None:
    limits = DataLimits(max_bytes=bytes_cap, max_line_bytes=line_cap, max_examples=examples_cap)
    examples, report = validate_bytes(data, "fuzz", limits)
    assert len(examples) == report.valid
    if examples_cap is not None:
        assert report.valid + report.invalid <= examples_cap
    assert all(1 <= e.line <= max(report.lines, 1) for e in report.errors)
    assert all(e.found != "" or e.expected for e in report.errors)
