"""How long one session may run: its training deadline and the operator's wall-clock budget.

Checked before each stage and after every training step, so a session that would miss
its deadline (or overrun its budget) stops at once instead of holding the aggregator for
work that can no longer be finalized; sessions run one at a time, so this bounds how
long any session waits behind another.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cotune.aggregator.faults import SessionFailedError

RELEASE_RESERVE_SECONDS = 60.0
"""Time kept before the training deadline for sealing, uploading and ``finalize``."""


class SessionBudget:
    """The instant a session's work must be done by, and a check against it."""

    def __init__(
        self,
        training_deadline: float,
        *,
        max_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``training_deadline`` in this clock's seconds; ``max_seconds`` from now, if set."""
        self._clock = clock
        self.started = clock()
        self.deadline = training_deadline - RELEASE_RESERVE_SECONDS
        self.max_seconds = max_seconds

    def check(self, stage: str) -> None:
        """Raise ``SessionFailedError`` when the session is out of time for ``stage``."""
        now = self._clock()
        if now > self.deadline:
            raise SessionFailedError(
                f"out of time at {stage}: the training deadline leaves no "
                f"{RELEASE_RESERVE_SECONDS:.0f} s to seal and finalize"
            )
        if self.max_seconds is not None and now - self.started > self.max_seconds:
            raise SessionFailedError(
                f"out of time at {stage}: over the operator's budget of "
                f"{self.max_seconds:.0f} s per session"
            )
