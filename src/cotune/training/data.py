"""JSONL datasets in the shapes 0G fine-tuning accepts, validated line by line.

Three shapes, one example per line:

- ``{"messages": [{"role": "system"|"user"|"assistant", "content": "…"}, …]}``
- ``{"instruction": "…", "input": "…", "output": "…"}`` (``input`` may be empty or absent)
- ``{"text": "…"}``

Every bad line gets its own error (line number, field, what was expected), and a
file with any error yields no examples at all: nothing is trained on a file that
fails validation.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cotune.common.atomic import write_bytes_atomic

ROLES = ("system", "user", "assistant")
ExampleKind = Literal["messages", "instruction", "text"]
MAX_REPORTED_ERRORS = 50
MAX_NESTING = 64
"""Deepest bracket nesting a line may have; real examples need three or four levels."""


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """One training example, normalised: chat turns, or plain ``text``."""

    kind: ExampleKind
    messages: tuple[Message, ...] = ()
    text: str = ""

    def canonical(self) -> str:
        """A stable string for hashing and duplicate detection."""
        if self.kind == "text":
            return self.text
        return "\n".join(f"{m.role}: {m.content}" for m in self.messages)


@dataclass(frozen=True)
class LineError:
    """What is wrong with one line."""

    line: int
    field: str
    expected: str
    found: str = ""

    def __str__(self) -> str:
        found = f", found {self.found}" if self.found else ""
        return f"line {self.line}: {self.field}: expected {self.expected}{found}"


@dataclass
class ValidationReport:
    """Outcome of validating one file."""

    source: str
    lines: int = 0
    valid: int = 0
    errors: list[LineError] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def invalid(self) -> int:
        """How many non-blank lines failed."""
        return len({e.line for e in self.errors})

    @property
    def ok(self) -> bool:
        """Whether every line is a valid example (and there is at least one)."""
        return not self.errors and self.valid > 0

    @property
    def invalid_rate(self) -> float:
        """Failed lines over non-blank lines."""
        total = self.valid + self.invalid
        return self.invalid / total if total else 0.0

    def summary(self) -> str:
        """One line: counts by shape and the number of bad lines."""
        shapes = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items())) or "no examples"
        if not self.errors and self.valid == 0:
            return f"{self.source}: empty: no examples"
        if not self.errors:
            return f"{self.source}: {self.valid} valid examples ({shapes})"
        return (
            f"{self.source}: {self.invalid} of {self.valid + self.invalid} lines invalid "
            f"({len(self.errors)} errors); {self.valid} valid ({shapes})"
        )

    def describe(self, limit: int = MAX_REPORTED_ERRORS) -> str:
        """Every error (up to ``limit``), then the summary."""
        shown = [f"{self.source}:{e}" for e in self.errors[:limit]]
        if len(self.errors) > limit:
            shown.append(f"… and {len(self.errors) - limit} more errors")
        return "\n".join([*shown, self.summary()])


class DatasetValidationError(ValueError):
    """A dataset file failed validation; ``report`` holds every error."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.describe())


@dataclass(frozen=True)
class Dataset:
    """The validated examples of one source, with the SHA-256 of its bytes."""

    source: str
    examples: tuple[Example, ...]
    sha256: str
    report: ValidationReport

    def __len__(self) -> int:
        return len(self.examples)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__.replace("str", "string")


def _string(
    obj: dict[str, Any], key: str, line: int, errors: list[LineError], *, allow_empty: bool
) -> str | None:
    value = obj.get(key)
    if not isinstance(value, str):
        errors.append(LineError(line, key, "a string", _type_name(value)))
        return None
    if not allow_empty and not value.strip():
        errors.append(LineError(line, key, "a non-empty string", "an empty string"))
        return None
    return value


def _parse_messages(obj: dict[str, Any], line: int, errors: list[LineError]) -> Example | None:
    raw = obj["messages"]
    if not isinstance(raw, list) or not raw:
        errors.append(LineError(line, "messages", "a non-empty list of turns", _type_name(raw)))
        return None
    turns: list[Message] = []
    before = len(errors)
    for i, turn in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(turn, dict):
            errors.append(LineError(line, where, 'an object {"role", "content"}', _type_name(turn)))
            continue
        role = turn.get("role")
        if role not in ROLES:
            errors.append(
                LineError(line, f"{where}.role", f"one of {', '.join(ROLES)}", repr(role))
            )
        content = turn.get("content")
        if not isinstance(content, str):
            errors.append(LineError(line, f"{where}.content", "a string", _type_name(content)))
        elif isinstance(role, str) and role in ROLES:
            turns.append(Message(role, content))
    if len(errors) > before:
        return None
    if not any(t.role == "assistant" and t.content.strip() for t in turns):
        errors.append(LineError(line, "messages", "at least one non-empty assistant turn"))
        return None
    return Example("messages", tuple(turns))


def _parse_instruction(obj: dict[str, Any], line: int, errors: list[LineError]) -> Example | None:
    before = len(errors)
    instruction = _string(obj, "instruction", line, errors, allow_empty=False)
    extra = obj.get("input", "")
    if not isinstance(extra, str):
        errors.append(LineError(line, "input", "a string (may be empty)", _type_name(extra)))
    output = _string(obj, "output", line, errors, allow_empty=False)
    if len(errors) > before or instruction is None or output is None:
        return None
    prompt = instruction if not extra else f"{instruction}\n\n{extra}"
    return Example("instruction", (Message("user", prompt), Message("assistant", output)))


def _too_deep(text: str) -> bool:
    """Whether brackets nest deeper than ``MAX_NESTING`` (outside strings).

    The C JSON decoder can overflow the C stack on very deep nesting before Python's
    recursion limit applies, so hostile lines are refused before decoding.
    """
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_line(text: str, line: int, errors: list[LineError]) -> Example | None:
    """Parse one JSONL line; append its errors and return ``None`` when it is invalid."""
    if _too_deep(text):
        found = f"JSON nested more than {MAX_NESTING} levels"
        errors.append(LineError(line, "(line)", "a JSON object", found))
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append(LineError(line, "(line)", "a JSON object", f"invalid JSON ({exc.msg})"))
        return None
    except RecursionError:
        errors.append(LineError(line, "(line)", "a JSON object", "JSON nested too deeply"))
        return None
    if not isinstance(obj, dict):
        errors.append(LineError(line, "(line)", "a JSON object", _type_name(obj)))
        return None
    if "messages" in obj:
        return _parse_messages(obj, line, errors)
    if "instruction" in obj or "output" in obj:
        return _parse_instruction(obj, line, errors)
    if "text" in obj:
        text_value = _string(obj, "text", line, errors, allow_empty=False)
        return None if text_value is None else Example("text", text=text_value)
    keys = ", ".join(sorted(obj)) or "no keys"
    errors.append(
        LineError(
            line,
            "(line)",
            'one of {"messages"}, {"instruction", "input", "output"} or {"text"}',
            keys,
        )
    )
    return None


def validate_lines(lines: Iterable[str], source: str) -> tuple[list[Example], ValidationReport]:
    """Validate JSONL lines (blank lines are skipped); return valid examples and the report."""
    report = ValidationReport(source)
    examples: list[Example] = []
    for number, text in enumerate(lines, start=1):
        report.lines = number
        if not text.strip():
            continue
        example = parse_line(text, number, report.errors)
        if example is not None:
            examples.append(example)
            report.kinds[example.kind] += 1
    report.valid = len(examples)
    return examples, report


def validate_bytes(data: bytes, source: str = "<memory>") -> tuple[list[Example], ValidationReport]:
    """Validate a JSONL document held in memory (e.g. freshly decrypted)."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not content
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        report = ValidationReport(source, lines=line)
        report.errors.append(
            LineError(line, "(line)", "UTF-8 text", f"byte 0x{data[exc.start]:02x}")
        )
        return [], report
    # JSONL lines end at "\n" only: str.splitlines() would also split inside strings
    # at U+2028 and friends, which JSON allows unescaped.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return validate_lines([line.removesuffix("\r") for line in lines], source)


def load_dataset(data: bytes, source: str = "<memory>") -> Dataset:
    """Validated examples of a JSONL document; ``DatasetValidationError`` on any bad line."""
    examples, report = validate_bytes(data, source)
    if not report.ok:
        raise DatasetValidationError(report)
    return Dataset(source, tuple(examples), hashlib.sha256(data).hexdigest(), report)


def load_jsonl(path: Path) -> Dataset:
    """Validated examples of a JSONL file; ``DatasetValidationError`` on any bad line."""
    return load_dataset(path.read_bytes(), str(path))


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write records one per line (UTF-8, sorted keys): the shape the readers accept."""
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, text.encode(), overwrite=True)
