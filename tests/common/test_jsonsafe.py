"""JSON nesting from other parties cannot crash the process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cotune.common.jsonsafe import MAX_DEPTH, JsonTooDeepError, loads, too_deep

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


@given(values)
def test_what_json_parses_within_the_depth_parses_the_same(value: Any) -> None:
    text = json.dumps(value)
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_the_depth_counts_brackets_outside_strings_only() -> None:
    assert not too_deep(_nested(MAX_DEPTH))
    assert too_deep(_nested(MAX_DEPTH + 1))
    assert not too_deep(json.dumps(["[" * 1000, "{" * 1000, '\\"[[[']))
    assert loads(_nested(MAX_DEPTH)) is not None
    with pytest.raises(JsonTooDeepError, match=f"nested more than {MAX_DEPTH} levels"):
        loads(_nested(MAX_DEPTH + 1))
    with pytest.raises(JsonTooDeepError):
        loads('{"a": ' * 100 + "1" + "}" * 100, max_depth=99)


def test_two_hundred_thousand_brackets_are_refused_not_a_segfault() -> None:
    # The chain libraries raise the recursion limit to 100,000: json.loads of this
    # document dies with SIGSEGV in the main thread before any RecursionError.
    script = (
        "import cotune.chain.connection\n"
        "from cotune.common.jsonsafe import JsonTooDeepError, loads\n"
        "try:\n"
        "    loads('[' * 200_000 + ']' * 200_000)\n"
        "except JsonTooDeepError:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "refused"), done.stderr[-2000:]
