"""Shared test settings.

A hypothesis profile sized for the 2-core CI machine, a private ``$COTUNE_HOME``
for the session, and one torch thread: with two threads on two cores that anvil or a
daemon under test also use, one torch thread waits on the other and a 40 s training
test can take over 300 s; one thread keeps every test's time steady.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from cotune.chain.devnet import free_port, start_anvil

torch.set_num_threads(1)

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def cotune_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point ``$COTUNE_HOME`` at a session directory: no test touches the real home.

    The built ``cotune-tiny`` model is cached there once for the whole session.
    """
    home = tmp_path_factory.mktemp("cotune-home")
    previous = os.environ.get("COTUNE_HOME")
    os.environ["COTUNE_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("COTUNE_HOME", None)
    else:
        os.environ["COTUNE_HOME"] = previous


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """One anvil for the whole session, on a free loopback port, stopped at the end."""
    port = free_port()
    proc = start_anvil(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
