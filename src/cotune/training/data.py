"""JSONL datasets in the shapes 0G fine-tuning accepts, validated line by line.

Three shapes, one example per line:

- ``{"messages": [{"role": "system"|"user"|"assistant", "content": "…"}, …]}``
- ``{"instruction": "…", "input": "…", "output": "…"}`` (``input`` may be empty or absent)
- ``{"text": "…"}``

Any line may also carry ``"answer"`` (the key content a correct reply must contain, for
task accuracy; by default the final reply itself) and ``"tag"`` (the sub-domain it
belongs to, for accuracy per sub-domain); training ignores both.

Every bad line gets its own error (line number, field, what was expected), and a
file with any error yields no examples at all: nothing is trained on a file that
fails validation.

Validation is bounded for hostile input (:class:`DataLimits`): a document over its
byte cap is refused unread, a line over its byte cap is an error without being
decoded, a document with more examples than its cap stops there, and at most
``MAX_STORED_ERRORS`` errors are kept (every bad line is still counted).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cotune.common.atomic import write_bytes_atomic
from cotune.common.jsonsafe import too_deep

ROLES = ("system", "user", "assistant")
ExampleKind = Literal["messages", "instruction", "text"]
MAX_REPORTED_ERRORS = 50
MAX_STORED_ERRORS = 1000
"""Errors a report keeps; past that, bad lines are counted but not described."""
MAX_NESTING = 64
"""Deepest bracket nesting a line may have; real examples need three or four levels."""
MAX_TURNS = 256
"""Most turns one chat example may have."""
TEXT_EXPECTED = "text (valid Unicode)"
LONE_SURROGATE = "a lone surrogate escape such as \\ud800"
MAX_LINE_BYTES = 1 << 20
"""Default cap on one line (an example far longer than any sequence length)."""
_BOM = b"\xef\xbb\xbf"
_BLANK_RUN = re.compile(rb"[ \t\r\n]+")


@dataclass(frozen=True)
class DataLimits:
    """Caps on one JSONL document; a session's rules set them for every contribution."""

    max_bytes: int | None = None
    """The whole document; larger is refused unread."""
    max_line_bytes: int = MAX_LINE_BYTES
    """One line, in bytes; a longer line is an error and is never decoded or parsed."""
    max_examples: int | None = None
    """Non-blank lines; validation stops after this many."""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_line_bytes", "max_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


UNLIMITED = DataLimits(max_line_bytes=1 << 62)
"""No caps: for data the caller produced itself."""


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
    answer: str | None = None
    """The key content a correct reply carries (None: the final reply itself)."""
    tag: str | None = None
    """The sub-domain the example belongs to, when the file says."""

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
    invalid: int = 0
    """How many non-blank lines failed (counted even past ``MAX_STORED_ERRORS``)."""
    over_limit: str | None = None
    """Set when the document broke a :class:`DataLimits` cap: what, in words."""

    @property
    def ok(self) -> bool:
        """Whether every line is a valid example (and there is at least one), within caps."""
        return not self.errors and self.valid > 0 and self.over_limit is None

    def reject_line(self, errors: Sequence[LineError]) -> None:
        """Count one bad line and keep its errors (while there is room)."""
        self.invalid += 1
        self.errors.extend(errors[: max(0, MAX_STORED_ERRORS - len(self.errors))])

    @property
    def invalid_rate(self) -> float:
        """Failed lines over non-blank lines."""
        total = self.valid + self.invalid
        return self.invalid / total if total else 0.0

    def summary(self) -> str:
        """One line: counts by shape and the number of bad lines."""
        shapes = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items())) or "no examples"
        if self.over_limit is not None:
            return f"{self.source}: {self.over_limit}"
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
        kept = len({e.line for e in self.errors})
        if self.invalid > kept:
            shown.append(f"… and {self.invalid - kept} more bad lines, not described")
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


def _is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: JSON escapes can decode to lone surrogates.

    No tokenizer and no UTF-8 encoder takes those.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__.replace("str", "string")


def _string(
    obj: dict[str, Any], key: str, line: int, errors: list[LineError], *, allow_empty: bool
) -> str | None:
    value = obj.get(key)
    if not isinstance(value, str):
        errors.append(LineError(line, key, "a string", _type_name(value)))
        return None
    if not _is_unicode(value):
        errors.append(LineError(line, key, TEXT_EXPECTED, LONE_SURROGATE))
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
    if len(raw) > MAX_TURNS:
        errors.append(LineError(line, "messages", f"at most {MAX_TURNS} turns", str(len(raw))))
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
        elif not _is_unicode(content):
            errors.append(LineError(line, f"{where}.content", TEXT_EXPECTED, LONE_SURROGATE))
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


def parse_line(text: str, line: int, errors: list[LineError]) -> Example | None:
    """Parse one JSONL line; append its errors and return ``None`` when it is invalid."""
    if too_deep(text, MAX_NESTING):
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
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        found = f"invalid JSON ({str(exc).split(':')[0]})"
        errors.append(LineError(line, "(line)", "a JSON object", found))
        return None
    if not isinstance(obj, dict):
        errors.append(LineError(line, "(line)", "a JSON object", _type_name(obj)))
        return None
    example = _parse_shape(obj, line, errors)
    if example is None:
        return None
    answer = _string(obj, "answer", line, errors, allow_empty=False) if "answer" in obj else None
    tag = _string(obj, "tag", line, errors, allow_empty=False) if "tag" in obj else None
    if ("answer" in obj and answer is None) or ("tag" in obj and tag is None):
        return None
    if answer is not None and example.kind == "text":
        errors.append(LineError(line, "answer", "no answer on a text example (it has no reply)"))
        return None
    return replace(example, answer=answer, tag=tag) if answer or tag else example


def _parse_shape(obj: dict[str, Any], line: int, errors: list[LineError]) -> Example | None:
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


def validate_lines(
    lines: Iterable[str], source: str, limits: DataLimits = UNLIMITED
) -> tuple[list[Example], ValidationReport]:
    """Validate JSONL lines (blank lines are skipped); return valid examples and the report."""
    report = ValidationReport(source)
    return _validate(_numbered(lines, report, limits), report, limits), report


def _too_long(number: int, size: int, limits: DataLimits) -> LineError:
    expected = f"a line of at most {limits.max_line_bytes} bytes"
    return LineError(number, "(line)", expected, f"{size} bytes")


def _numbered(
    lines: Iterable[str], report: ValidationReport, limits: DataLimits
) -> Iterator[tuple[int, str]]:
    for number, text in enumerate(lines, start=1):
        report.lines = number
        # UTF-8 takes at most 4 bytes a character: only a long line needs encoding to measure.
        if 4 * len(text) > limits.max_line_bytes and len(text.encode()) > limits.max_line_bytes:
            report.reject_line([_too_long(number, len(text.encode()), limits)])
        elif text.strip():
            yield number, text


def _validate(
    lines: Iterable[tuple[int, str]], report: ValidationReport, limits: DataLimits
) -> list[Example]:
    """Parse non-blank ``(number, text)`` lines within the caps, counting into ``report``."""
    examples: list[Example] = []
    for number, text in lines:
        if not text.strip():
            continue
        if limits.max_examples is not None and report.valid + report.invalid >= limits.max_examples:
            report.over_limit = f"more than {limits.max_examples} examples"
            break
        line_errors: list[LineError] = []
        example = parse_line(text, number, line_errors)
        if example is None:
            report.reject_line(line_errors)
        else:
            examples.append(example)
            report.kinds[example.kind] += 1
            report.valid += 1
    return examples


class _NotTextError(Exception):
    """A document is not UTF-8: the absolute offset of the first bad byte."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


def _document_lines(
    data: bytes, report: ValidationReport, limits: DataLimits
) -> Iterator[tuple[int, str]]:
    r"""Each line that is not whitespace-only, with its number, decoded one at a time.

    JSONL lines end at "\n" only (``str.splitlines`` would also split inside strings at
    U+2028 and friends, which JSON allows unescaped). A line over ``max_line_bytes`` is
    counted as bad without being decoded. Runs of blank lines are skipped at C speed, so
    a document of nothing but newlines costs no Python loop per line.
    """
    start, number, length = (len(_BOM) if data.startswith(_BOM) else 0), 1, len(data)
    while start < length:
        blank = _BLANK_RUN.match(data, start)
        if blank is not None:
            number += data.count(b"\n", start, blank.end())
            start = blank.end()
            if start >= length:
                break
        end = data.find(b"\n", start)
        end = length if end < 0 else end
        if end - start > limits.max_line_bytes:
            report.reject_line([_too_long(number, end - start, limits)])
        else:
            try:
                text = data[start:end].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _NotTextError(start + exc.start) from None
            yield number, text.removesuffix("\r")
        start, number = end + 1, number + 1


def validate_bytes(
    data: bytes, source: str = "<memory>", limits: DataLimits = UNLIMITED
) -> tuple[list[Example], ValidationReport]:
    """Validate a JSONL document held in memory (e.g. freshly decrypted), within ``limits``."""
    report = ValidationReport(source, lines=data.count(b"\n") + (not data.endswith(b"\n")))
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        report.over_limit = f"{len(data)} bytes, over the cap of {limits.max_bytes} bytes"
        return [], report
    try:
        return _validate(_document_lines(data, report, limits), report, limits), report
    except _NotTextError as bad:  # not text: one error, at the first bad byte, nothing else counts
        line = data.count(b"\n", 0, bad.offset) + 1
        not_text = ValidationReport(source, lines=line)
        error = LineError(line, "(line)", "UTF-8 text", f"byte 0x{data[bad.offset]:02x}")
        not_text.reject_line([error])
        return [], not_text


def load_dataset(data: bytes, source: str = "<memory>", limits: DataLimits = UNLIMITED) -> Dataset:
    """Validated examples of a JSONL document; ``DatasetValidationError`` on any bad line."""
    examples, report = validate_bytes(data, source, limits)
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
