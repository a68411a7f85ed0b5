"""Helpers shared by the CLI tests."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx


def chat_jsonl(path: Path, answers: list[str]) -> Path:
    """Write one two-turn chat example per answer to ``path``; return it."""
    lines = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": a}]}
        for i, a in enumerate(answers)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def wait_for_server(url: str, server: subprocess.Popen[Any]) -> None:
    """Poll the dataset server at ``url`` until it answers (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, f"the dataset server exited: {server.communicate()}"
        try:
            httpx.get(f"{url}/versions", timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the dataset server did not start"
            time.sleep(0.2)
