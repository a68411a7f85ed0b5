"""Operator limits and session budgets: an owner's worst case is refused before any work."""

from __future__ import annotations

import dataclasses

import pytest

from cotune.aggregator.budget import RELEASE_RESERVE_SECONDS, SessionBudget
from cotune.aggregator.faults import SessionFailedError
from cotune.aggregator.limits import OperatorLimits, over_limits, worst_case
from cotune.aggregator.spec import SessionSpec
from cotune.sdk.client import SessionOptions
from cotune.training.config import LoraHyperparams
from cotune.training.rules import GateRules

DEFAULTS = OperatorLimits()


def test_a_default_session_fits_the_default_limits() -> None:
    options = SessionOptions(enclave_id=1)
    assert over_limits(options.spec, options.rules, options.max_contributors, DEFAULTS) == []


def test_a_million_epochs_is_refused_by_its_worst_case() -> None:
    spec = SessionSpec(hyperparams=LoraHyperparams(epochs=10**6))
    problems = over_limits(spec, GateRules(), 1, DEFAULTS)
    assert any(p.startswith("worst-case steps") for p in problems), problems
    assert any(p.startswith("worst-case training tokens") for p in problems), problems


def test_max_steps_sets_the_worst_case_whatever_the_epochs() -> None:
    spec = SessionSpec(hyperparams=LoraHyperparams(epochs=10**6, max_steps=1000))
    assert worst_case(spec, GateRules(), 3)["steps"] == 1000
    assert over_limits(spec, GateRules(), 3, DEFAULTS) == []
    # The trainer runs exactly max_steps: one epoch does not bound it.
    huge = SessionSpec(hyperparams=LoraHyperparams(epochs=1, max_steps=10**12))
    assert worst_case(huge, GateRules(), 3)["steps"] == 10**12
    problems = over_limits(huge, GateRules(), 3, DEFAULTS)
    assert any(p.startswith("worst-case steps 1,000,000,000,000") for p in problems), problems


def test_the_rank_is_capped() -> None:
    wide = SessionSpec(hyperparams=LoraHyperparams(rank=4096, alpha=8192))
    assert any(p.startswith("rank 4,096") for p in over_limits(wide, GateRules(), 2, DEFAULTS))
    probes = GateRules(probe_rank=1024)
    assert any(
        p.startswith("rules.probe_rank") for p in over_limits(SessionSpec(), probes, 2, DEFAULTS)
    )


def test_the_token_cap_of_the_rules_lowers_the_worst_case() -> None:
    spec = SessionSpec()
    loose, tight = GateRules(), GateRules(max_tokens=1000)
    assert worst_case(spec, tight, 3)["train_tokens"] == 3 * 1000 * spec.hyperparams.epochs
    assert worst_case(spec, tight, 3)["train_tokens"] < worst_case(spec, loose, 3)["train_tokens"]


@pytest.mark.parametrize(
    ("spec", "rules", "submissions", "named"),
    [
        (SessionSpec(), GateRules(), DEFAULTS.max_contributors + 1, "submissions"),
        (SessionSpec(hyperparams=LoraHyperparams(seq_len=8192)), GateRules(), 2, "seq_len"),
        (SessionSpec(hyperparams=LoraHyperparams(batch_size=1024)), GateRules(), 2, "batch_size"),
        (SessionSpec(), GateRules(probe_token_budget=10**7), 2, "rules.probe_token_budget"),
        (SessionSpec(), GateRules(max_contribution_bytes=1 << 30), 2,
         "rules.max_contribution_bytes"),
    ],
    ids=["contributors", "seq_len", "batch", "probe", "bytes"],
)  # fmt: skip
def test_each_cap_is_named(
    spec: SessionSpec, rules: GateRules, submissions: int, named: str
) -> None:
    problems = over_limits(spec, rules, submissions, DEFAULTS)
    assert any(p.startswith(named + " ") for p in problems), problems


def test_the_session_bytes_cap_counts_every_submission() -> None:
    limits = dataclasses.replace(DEFAULTS, max_session_bytes=100 << 20)
    rules = GateRules(max_contribution_bytes=30 << 20)
    assert over_limits(SessionSpec(), rules, 3, limits) == []
    assert any(
        p.startswith("worst-case bytes held") for p in over_limits(SessionSpec(), rules, 4, limits)
    )


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_steps must be > 0"):
        OperatorLimits(max_steps=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_keeps_a_reserve_before_the_deadline() -> None:
    clock = Clock()
    budget = SessionBudget(2000.0, clock=clock)
    clock.now = 2000.0 - RELEASE_RESERVE_SECONDS
    budget.check("train")
    clock.now += 1
    with pytest.raises(SessionFailedError, match="out of time at train: the training deadline"):
        budget.check("train")


def test_the_operators_wall_clock_budget() -> None:
    clock = Clock()
    budget = SessionBudget(10**9, max_seconds=30, clock=clock)
    clock.now += 30
    budget.check("gate")
    clock.now += 1
    with pytest.raises(SessionFailedError, match="over the operator's budget of 30 s"):
        budget.check("gate")
