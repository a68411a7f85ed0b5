"""Fixtures of the training tests: the ``cotune-tiny`` model, built once per session.

``$COTUNE_HOME`` is a directory under the session's pytest temp dir (the root conftest's
when it sets one, else our own), so no test reads or writes the user's real
``~/.cotune``. The model is built into ``$COTUNE_HOME/models`` (about 20 s on two CPU
cores), where other tests of the session that use the default location find it too,
and loaded once.

Set ``COTUNE_TEST_MODEL_CACHE`` to a directory to keep the built model between runs
(handy while iterating on the tests; the cache is keyed by the model's recipe hash).

Tests that train take ``base``: the shared model, checked to carry no LoRA layers
before and after the test, so a test that forgets ``detach_lora`` fails loudly
instead of corrupting the tests after it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from training_helpers import lora_modules

from cotune.training.base_model import BaseModel, load_base
from cotune.training.synthetic import DemoData, demo_data
from cotune.training.tiny import TINY_MODEL_ID, tiny_model_dir


@pytest.fixture(scope="session", autouse=True)
def private_cotune_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$COTUNE_HOME`` under the session's temp dir for the whole session."""
    current = os.environ.get("COTUNE_HOME")
    basetemp = tmp_path_factory.getbasetemp().resolve()
    if current and Path(current).resolve().is_relative_to(basetemp):
        yield Path(current)  # already private (the root conftest sets it)
        return
    home = tmp_path_factory.mktemp("cotune-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COTUNE_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def model_cache(private_cotune_home: Path) -> Path:
    """Where the tiny model is built: ``$COTUNE_TEST_MODEL_CACHE`` or ``$COTUNE_HOME/models``."""
    configured = os.environ.get("COTUNE_TEST_MODEL_CACHE")
    return Path(configured) if configured else private_cotune_home / "models"


@pytest.fixture(scope="session")
def tiny_dir(model_cache: Path) -> Path:
    """The built ``cotune-tiny`` directory (built at most once per session)."""
    return tiny_model_dir(model_cache)


@pytest.fixture(scope="session")
def tiny_base(tiny_dir: Path, model_cache: Path) -> BaseModel:
    """The loaded ``cotune-tiny`` base model, shared by the whole session."""
    loaded = load_base(TINY_MODEL_ID, model_cache)
    assert loaded.path == tiny_dir
    return loaded


@pytest.fixture
def base(tiny_base: BaseModel) -> Iterator[BaseModel]:
    """The shared base model, asserted clean of adapters before and after the test."""
    assert lora_modules(tiny_base.model) == [], "a previous test left an adapter attached"
    yield tiny_base
    assert lora_modules(tiny_base.model) == [], "this test left an adapter attached"
    assert not tiny_base.model.training


@pytest.fixture(scope="session")
def demo() -> DemoData:
    """The demo data at its default, realistic size (200 examples per contributor)."""
    return demo_data()
