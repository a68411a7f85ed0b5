"""Helpers shared by the CLI tests."""

from __future__ import annotations

import json
from pathlib import Path


def chat_jsonl(path: Path, answers: list[str]) -> Path:
    """Write one two-turn chat example per answer to ``path``; return it."""
    lines = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": a}]}
        for i, a in enumerate(answers)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
