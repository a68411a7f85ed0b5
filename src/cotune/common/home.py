"""Where cotune keeps per-user state: ``$COTUNE_HOME``, defaulting to ``~/.cotune``."""

from __future__ import annotations

import os
from pathlib import Path


def cotune_home() -> Path:
    """The cotune home directory (not created here)."""
    return Path(os.environ.get("COTUNE_HOME", Path.home() / ".cotune"))
