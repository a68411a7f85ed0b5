"""The progress-callback type shared by long-running byte operations."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int], None]
"""Called with the number of bytes just processed."""


def no_progress(_: int) -> None:
    """Ignore progress; the default callback."""
