"""JSON from other parties, parsed without letting its nesting crash the process.

CPython's C decoder recurses once per nesting level and counts on the recursion limit to
stop it; the chain libraries raise that limit to 100,000, far past what the C stack
holds, so tens of thousands of ``[`` would kill the process with a segmentation fault
before any Python exception. :func:`loads` refuses nesting deeper than ``max_depth``
first (outside strings), in one pass, and only for documents with that many brackets.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting accepted by default; cotune's own documents need under ten levels."""


class JsonTooDeepError(ValueError):
    """A JSON document nests deeper than allowed."""


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` in ``text``."""
    if text.count("[") + text.count("{") <= limit:
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
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, refusing (``JsonTooDeepError``) nesting deeper than ``max_depth``.

    Bytes must be UTF-8 (``UnicodeDecodeError`` otherwise); every other problem is the
    ``ValueError`` ``json.loads`` raises.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if too_deep(text, max_depth):
        raise JsonTooDeepError(f"JSON nested more than {max_depth} levels")
    return json.loads(text)
