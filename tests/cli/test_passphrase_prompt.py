"""The hidden passphrase prompt, driven through a real pseudo-terminal."""

import os
import pty
import select
import sys
import termios
import time
from pathlib import Path

COTUNE = str(Path(sys.executable).parent / "cotune")


def _run_in_pty(args: list[str], answers: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``cotune args`` on a pty, answering each prompt in turn; return (status, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: becomes cotune with the pty as its terminal
        os.execve(COTUNE, [COTUNE, *args], env)  # noqa: S606 (a fixed argv, no shell)
    output = b""
    pending = list(answers)
    answered_at = 0  # a prompt counts only if it appeared after the last answer
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        # getpass flushes input when it turns echo off, so answer only once it is off
        prompt = output[answered_at:].rstrip()
        if pending and prompt.endswith(b":") and _echo_off(fd):
            os.write(fd, pending.pop(0).encode() + b"\n")
            answered_at = len(output)
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def _echo_off(fd: int) -> bool:
    return not termios.tcgetattr(fd)[3] & termios.ECHO


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "COTUNE_PASSPHRASE"} | {"TERM": "dumb"}


def test_prompt_creates_and_unlocks(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    code, out = _run_in_pty(["keys", "new", str(path)], ["s3cret", "s3cret"], _env())
    assert code == 0, out
    assert "s3cret" not in out  # the prompt hides what is typed
    assert path.exists()

    code, out = _run_in_pty(["keys", "show", str(path), "--unlock"], ["s3cret"], _env())
    assert code == 0, out

    code, out = _run_in_pty(["keys", "show", str(path), "--unlock"], ["wrong"], _env())
    assert code != 0
    assert "passphrase" in out.lower()


def test_prompt_mismatch_is_asked_again(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    code, out = _run_in_pty(["keys", "new", str(path)], ["one", "two", "ok", "ok"], _env())
    assert code == 0, out
    assert "match" in out.lower()
    code, out = _run_in_pty(["keys", "show", str(path), "--unlock"], ["ok"], _env())
    assert code == 0, out
