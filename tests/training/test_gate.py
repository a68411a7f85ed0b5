"""The quality gate on the demo data: every poison rejected for its reason, clean data kept.

Also the rules' canonical hash, the evidence hash, contradiction counting and the
robust outlier rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from training_helpers import to_examples, to_jsonl

from cotune.training.base_model import BaseModel
from cotune.training.config import LoraHyperparams
from cotune.training.data import Example, Message
from cotune.training.gate import (
    SCORE_SCALE,
    Decision,
    GateReport,
    GateRules,
    Reason,
    _outlier_threshold,
    contradictions,
    judge_scores,
    normalise,
    probe_sample_seed,
    run_gate,
)
from cotune.training.synthetic import DemoData, domain_examples

RULES = GateRules()
"""The default rules: what a session uses unless its owner changes them."""
CLEAN = ("contributor_1_clinic", "contributor_2_capitals", "contributor_3_units")


@dataclass(frozen=True)
class GateRun:
    """A gate report and the (contributor, stage) progress it reported."""

    report: GateReport
    progress: list[tuple[str, str]]

    def decision(self, contributor: str) -> Decision:
        return next(d for d in self.report.decisions if d.contributor == contributor)


def run(
    base: BaseModel,
    contributions: Sequence[tuple[str, bytes]],
    eval_examples: Sequence[Example],
    rules: GateRules = RULES,
) -> GateRun:
    progress: list[tuple[str, str]] = []
    report = run_gate(
        base,
        contributions,
        eval_examples,
        rules,
        on_progress=lambda who, stage: progress.append((who, stage)),
    )
    return GateRun(report, progress)


@pytest.fixture(scope="module")
def eval_examples(demo: DemoData) -> list[Example]:
    return to_examples(demo.eval_set, "eval")


def with_a_bad_line(records: list[dict[str, Any]]) -> bytes:
    lines = to_jsonl(records).decode().splitlines()
    lines.insert(len(lines) // 2, json.dumps({"instruction": "Convert.", "output": 3}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def demo_gate(tiny_base: BaseModel, demo: DemoData, eval_examples: list[Example]) -> GateRun:
    """One gate run over the whole demo: 3 clean, 4 poisoned, too few, and invalid lines."""
    contributions = [(name, to_jsonl(records)) for name, records in demo.contributors.items()]
    contributions += [(name, to_jsonl(records)) for name, records in demo.poisoned.items()]
    contributions.append(("too_few", to_jsonl(domain_examples("units", 12, seed=77))))
    contributions.append(("invalid", with_a_bad_line(domain_examples("clinic", 60, seed=78))))
    return run(tiny_base, contributions, eval_examples)


def test_every_clean_contributor_is_accepted(demo_gate: GateRun) -> None:
    for name in CLEAN:
        decision = demo_gate.decision(name)
        assert (decision.accepted, decision.reason) == (True, Reason.ACCEPTED), decision.evidence
        assert decision.score is not None
        assert decision.score >= RULES.score_floor
        assert decision.weight > 0


@pytest.mark.parametrize(
    ("poison", "reasons"),
    [
        ("random_text", {Reason.UNINTELLIGIBLE}),
        ("off_domain", {Reason.BELOW_FLOOR, Reason.OUTLIER}),
        ("duplicated_spam", {Reason.DUPLICATES}),
        ("shuffled_answers", {Reason.CONTRADICTIONS}),
        ("too_few", {Reason.TOO_FEW_EXAMPLES}),
        ("invalid", {Reason.INVALID_LINES}),
    ],
)
def test_each_poison_is_rejected_for_its_reason(
    demo_gate: GateRun, poison: str, reasons: set[Reason]
) -> None:
    decision = demo_gate.decision(poison)
    assert not decision.accepted
    assert decision.reason in reasons, decision.evidence
    assert decision.weight == 0
    assert decision.evidence["decision"] == decision.reason.name.lower()


def test_the_rejections_carry_their_evidence(demo_gate: GateRun) -> None:
    spam = demo_gate.decision("duplicated_spam").evidence
    assert spam["duplicate_rate"] > RULES.max_duplicate_rate
    assert spam["duplicate_rate"] == pytest.approx(1 - 1 / 200)  # "!" and "!!" normalise alike
    shuffled = demo_gate.decision("shuffled_answers").evidence
    assert shuffled["contradiction_checkable"] >= RULES.min_contradiction_checks
    assert shuffled["contradiction_rate"] > RULES.max_contradiction_rate
    invalid = demo_gate.decision("invalid").evidence
    assert (invalid["invalid_lines"], invalid["examples"]) == (1, 60)
    assert demo_gate.decision("too_few").evidence["examples"] == 12
    assert demo_gate.decision("off_domain").evidence["score"] < RULES.score_floor
    random_text = demo_gate.decision("random_text")
    assert random_text.evidence["data_loss_ratio"] > RULES.max_data_loss_ratio
    clean_losses = [demo_gate.decision(name).evidence["data_loss"] for name in CLEAN]
    assert random_text.evidence["data_loss"] > 1.5 * max(clean_losses)
    assert random_text.score is None  # not scored: it cannot sway the outlier test
    assert "probe_eval_loss" not in random_text.evidence


def test_clean_evidence_is_clean(demo_gate: GateRun, demo: DemoData) -> None:
    for name in CLEAN:
        evidence = demo_gate.decision(name).evidence
        assert evidence["invalid_lines"] == 0
        assert evidence["duplicate_rate"] == 0.0
        assert evidence["contradiction_rate"] == 0.0
        assert evidence["cross_duplicate_rate"] <= RULES.max_cross_duplicate_rate
        assert (
            evidence["dataset_commitment"]
            == hashlib.sha256(to_jsonl(demo.contributors[name])).hexdigest()
        )
        assert evidence["rules_hash"] == "0x" + RULES.hash().hex()
        probe = RULES.probe_hyperparams(evidence["examples"])
        assert evidence["probe_steps"] == probe.max_steps
        assert 0 < evidence["probe_tokens"] <= RULES.probe_token_budget
        assert evidence["probe_eval_loss"] < evidence["base_eval_loss"]
        assert evidence["data_loss_ratio"] <= RULES.max_data_loss_ratio


def test_weights_share_one_million_among_the_accepted(demo_gate: GateRun) -> None:
    accepted = demo_gate.report.accepted
    assert [d.contributor for d in accepted] == list(CLEAN)
    total = sum(d.weight for d in accepted)
    assert abs(total - SCORE_SCALE) <= len(accepted)  # rounding only
    assert all(d.weight == 0 for d in demo_gate.report.decisions if not d.accepted)
    # Weights are proportional to the scores.
    scores = {d.contributor: d.score or 0.0 for d in accepted}
    for d in accepted:
        assert d.weight == pytest.approx(
            SCORE_SCALE * scores[d.contributor] / sum(scores.values()), abs=1
        )
    assert set(demo_gate.report.accepted_examples) == set(CLEAN)
    assert all(len(v) == 200 for v in demo_gate.report.accepted_examples.values())


def test_only_structurally_sound_contributions_are_trained_on(demo_gate: GateRun) -> None:
    probed = [who for who, stage in demo_gate.progress if stage == "probe"]
    assert probed == [*CLEAN, "random_text", "off_domain"]
    validated = [who for who, stage in demo_gate.progress if stage == "validate"]
    assert validated == [d.contributor for d in demo_gate.report.decisions]
    for decision in demo_gate.report.decisions:
        if decision.contributor not in probed:
            assert decision.score is None
            assert decision.score_micro == 0
            assert "probe_eval_loss" not in decision.evidence


def test_the_public_report(demo_gate: GateRun) -> None:
    report = demo_gate.report.to_dict()
    assert report["rules"] == dataclasses.asdict(RULES)
    assert report["rules_hash"] == "0x" + RULES.hash().hex()
    assert report["base_eval"]["examples"] == 60
    entry = report["decisions"][0]
    decision = demo_gate.report.decisions[0]
    assert entry["reason"] == "accepted"
    assert entry["reason_code"] == 0
    assert entry["evidence_hash"] == "0x" + decision.evidence_hash.hex()
    assert decision.score_micro == round((decision.score or 0) * SCORE_SCALE)
    json.dumps(report)  # JSON-able, as published


# ---- cross duplicates and determinism ---------------------------------------------------


def near_copy(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Another party's records, reordered, lower-cased and with punctuation dropped."""
    copied = [
        {**r, "instruction": r["instruction"].lower(), "output": r["output"].rstrip(".")}
        for r in records
    ]
    random.Random(5).shuffle(copied)
    return copied


@pytest.fixture(scope="module")
def copier_contributions(demo: DemoData) -> list[tuple[str, bytes]]:
    capitals = demo.contributors["contributor_2_capitals"]
    return [
        ("contributor_2_capitals", to_jsonl(capitals)),
        ("contributor_3_units", to_jsonl(demo.contributors["contributor_3_units"])),
        ("copier", to_jsonl(near_copy(capitals))),
    ]


@pytest.fixture(scope="module")
def copier_gate(
    tiny_base: BaseModel,
    copier_contributions: list[tuple[str, bytes]],
    eval_examples: list[Example],
) -> GateRun:
    return run(tiny_base, copier_contributions, eval_examples)


def test_a_copy_of_another_contributors_file_is_rejected(copier_gate: GateRun) -> None:
    copier = copier_gate.decision("copier")
    assert (copier.accepted, copier.reason, copier.weight) == (False, Reason.CROSS_DUPLICATES, 0)
    assert copier.evidence["cross_duplicate_rate"] == 1.0
    assert copier.evidence["duplicate_rate"] == 0.0
    original = copier_gate.decision("contributor_2_capitals")  # submitted first: keeps its data
    assert original.accepted
    assert original.evidence["cross_duplicate_rate"] == 0.0
    units = copier_gate.decision("contributor_3_units")
    assert units.accepted
    assert units.weight + original.weight == pytest.approx(SCORE_SCALE, abs=2)


def test_the_gate_is_deterministic(
    tiny_base: BaseModel,
    copier_gate: GateRun,
    copier_contributions: list[tuple[str, bytes]],
    eval_examples: list[Example],
) -> None:
    again = run(tiny_base, copier_contributions, eval_examples)
    assert [d.evidence_hash for d in again.report.decisions] == [
        d.evidence_hash for d in copier_gate.report.decisions
    ]
    assert again.report.decisions == copier_gate.report.decisions


def test_one_changed_byte_changes_the_evidence_hash(
    tiny_base: BaseModel,
    copier_contributions: list[tuple[str, bytes]],
    eval_examples: list[Example],
) -> None:
    changed = [(name, data + b"\n") for name, data in copier_contributions[:1]]  # a blank line
    first = run(
        tiny_base,
        copier_contributions[:1],
        eval_examples,
        dataclasses.replace(RULES, min_examples=500),
    )
    second = run(tiny_base, changed, eval_examples, dataclasses.replace(RULES, min_examples=500))
    (a,), (b,) = first.report.decisions, second.report.decisions
    assert a.reason == b.reason == Reason.TOO_FEW_EXAMPLES  # structural only: nothing trained
    assert a.evidence["dataset_commitment"] != b.evidence["dataset_commitment"]
    assert a.evidence_hash != b.evidence_hash


# ---- evidence hash -----------------------------------------------------------------------


def decision(evidence: dict[str, Any]) -> Decision:
    return Decision("alice", True, Reason.ACCEPTED, 0.25, 1_000_000, evidence)


def test_evidence_hash_is_canonical_json() -> None:
    evidence = {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}
    reordered = {"a": {"y": True, "z": "é"}, "b": [1, 2.5, None]}
    assert decision(evidence).evidence_hash == decision(reordered).evidence_hash
    canonical = '{"a":{"y":true,"z":"\\u00e9"},"b":[1,2.5,null]}'
    assert decision(evidence).evidence_hash == hashlib.sha256(canonical.encode()).digest()
    assert (
        decision(evidence).to_dict()["evidence_hash"]
        == "0x" + decision(evidence).evidence_hash.hex()
    )


@pytest.mark.parametrize(
    "change",
    [{"a": {"y": False, "z": "é"}}, {"b": [1, 2.5]}, {"c": 0}, {"b": [1, 2.5000001, None]}],
)
def test_evidence_hash_changes_with_the_evidence(change: dict[str, Any]) -> None:
    evidence = {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}
    assert decision(evidence).evidence_hash != decision({**evidence, **change}).evidence_hash


def test_score_micro() -> None:
    assert decision({}).score_micro == 250_000
    unscored = Decision("bob", False, Reason.DUPLICATES, None, 0, {})
    assert unscored.score_micro == 0
    assert unscored.to_dict()["reason"] == "duplicates"
    assert unscored.to_dict()["reason_code"] == 3


# ---- rules -------------------------------------------------------------------------------


def test_rules_hash_is_canonical() -> None:
    rules = GateRules()
    assert rules.hash() == GateRules().hash()
    assert rules.hash() == hashlib.sha256(rules.canonical_json().encode()).digest()
    assert GateRules.from_dict(json.loads(rules.canonical_json())).hash() == rules.hash()
    assert " " not in rules.canonical_json()
    assert list(json.loads(rules.canonical_json())) == sorted(dataclasses.asdict(rules))
    assert len(rules.hash()) == 32


def changed(value: Any) -> Any:
    if isinstance(value, float):
        return value + 0.01
    return value + 1


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(GateRules)])
def test_any_field_change_changes_the_rules_hash(field: str) -> None:
    rules = GateRules()
    other = dataclasses.replace(rules, **{field: changed(getattr(rules, field))})
    assert other.hash() != rules.hash()


def test_every_rules_field_has_a_distinct_hash() -> None:
    rules = GateRules()
    hashes = {
        dataclasses.replace(rules, **{f.name: changed(getattr(rules, f.name))}).hash()
        for f in dataclasses.fields(GateRules)
    }
    assert len(hashes) == len(dataclasses.fields(GateRules))


def test_rules_from_dict_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown gate rules: min_example, outlierk"):
        GateRules.from_dict({"min_example": 3, "outlierk": 2.0, "seed": 1})
    assert GateRules.from_dict({"seed": 4}) == GateRules(seed=4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probe_last_layers": -1}, "probe_last_layers must be >= 0, got -1"),
        ({"max_data_loss_ratio": 0}, "max_data_loss_ratio must be > 0, got 0.0"),
    ],
)
def test_rules_refuse_values_out_of_range(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        GateRules(**changes)


def test_probes_deeper_than_the_model_are_refused_up_front(
    base: BaseModel, eval_examples: list[Example]
) -> None:
    rules = dataclasses.replace(RULES, probe_last_layers=5)
    with pytest.raises(ValueError, match="probe_last_layers is 5, but the base model has 2 layers"):
        run_gate(
            base, [("a", to_jsonl(domain_examples("units", 30, seed=1)))], eval_examples, rules
        )


def test_a_contribution_with_nothing_to_train_on_is_rejected_alone(
    base: BaseModel, eval_examples: list[Example]
) -> None:
    """Prompts past the sequence length leave no label to learn: that contributor is out."""
    long_prompts = [
        {"instruction": f"{i} " + "word " * 70, "input": "", "output": "ok"} for i in range(30)
    ]
    clean = domain_examples("clinic", 40, seed=3)
    gate = run(base, [("long", to_jsonl(long_prompts)), ("clean", to_jsonl(clean))], eval_examples)
    long, kept = gate.decision("long"), gate.decision("clean")
    assert (long.accepted, long.reason, long.score) == (False, Reason.TOO_FEW_EXAMPLES, None)
    assert (
        "no training example has a loss-carrying token within 256 tokens"
        in (long.evidence["probe_error"])
    )
    assert kept.accepted and kept.score is not None


def test_equal_rules_have_equal_hashes() -> None:
    as_int, as_float = GateRules(score_floor=1), GateRules(score_floor=1.0)
    assert as_int == as_float
    assert as_int.hash() == as_float.hash()


def test_the_probe_sample_seed_needs_every_contribution() -> None:
    """Public rules alone must not tell a contributor which examples the probe sees."""
    data = [b"one", b"two", b"three"]
    seed = probe_sample_seed(RULES, data)
    assert seed == probe_sample_seed(RULES, data[::-1])  # submission order does not matter
    assert seed.startswith("0x") and len(seed) == 66
    others = {
        probe_sample_seed(RULES, [b"one", b"two", b"thre3"]),
        probe_sample_seed(RULES, data[:2]),
        probe_sample_seed(dataclasses.replace(RULES, seed=RULES.seed + 1), data),
    }
    assert seed not in others and len(others) == 3


def test_the_probe_sample_seed_is_recomputable_from_the_evidence(demo_gate: GateRun) -> None:
    decisions = demo_gate.report.decisions
    digests = ",".join(sorted(d.evidence["dataset_commitment"] for d in decisions))
    expected = "0x" + hashlib.sha256(f"{RULES.seed}:{digests}".encode()).hexdigest()
    probed = [d for d in decisions if "probe_steps" in d.evidence]
    assert len(probed) == 5  # the three clean, random text and off-domain
    assert {d.evidence["probe_sample_seed"] for d in probed} == {expected}


def test_probe_hyperparams_follow_the_rules() -> None:
    rules = GateRules(
        probe_rank=4, probe_fraction=0.5, probe_learning_rate=1e-3, probe_last_layers=2, seed=3
    )
    assert rules.probe_hyperparams(examples=112) == LoraHyperparams(
        rank=4, alpha=8, learning_rate=1e-3, max_steps=7, warmup_steps=1, last_layers=2, seed=3
    )


@pytest.mark.parametrize(("examples", "steps"), [(1, 4), (128, 4), (129, 5), (800, 25)])
def test_the_probe_grows_with_the_contribution(examples: int, steps: int) -> None:
    # A quarter of one pass at 8 examples per step, never fewer than 4 steps.
    assert GateRules().probe_hyperparams(examples).max_steps == steps


def test_the_outlier_test_ignores_scores_below_the_floor() -> None:
    clean = {f"c{i}": s for i, s in enumerate([0.91, 0.88, 0.66, 0.67, 0.61, 0.64])}
    scores = clean | {"weak": 0.35, "useless": -0.05}
    threshold, verdicts = judge_scores(scores, RULES)
    assert verdicts["useless"] is Reason.BELOW_FLOOR
    assert verdicts["weak"] is Reason.OUTLIER  # counting "useless" would have hidden it
    assert all(verdicts[c] is Reason.ACCEPTED for c in clean)
    assert threshold == _outlier_threshold([*clean.values(), 0.35], RULES)


# ---- contradictions and normalise --------------------------------------------------------


def qa(question: str, answer: str) -> Example:
    return Example("messages", (Message("user", question), Message("assistant", answer)))


def test_normalise() -> None:
    assert normalise("  Hello,   WORLD!! ") == "hello world"
    assert normalise("Tarsk.") == normalise("tarsk") == "tarsk"
    assert normalise("Café — crème") == "café crème"
    assert normalise("snake_case stays") == "snake_case stays"


def test_contradictions_against_the_reference() -> None:
    reference = [qa("Capital of Velmor?", "Tarsk."), qa("Capital of Quenth?", "Orvel.")]
    examples = [
        qa("capital of velmor", "tarsk"),  # agrees, after normalisation
        qa("Capital of Quenth?", "Tarsk."),  # contradicts
        qa("Capital of Nowhere?", "Mire."),  # unknown prompt: not checkable
        Example("text", text="Capital of Velmor? Orvel."),  # text: not checkable
    ]
    assert contradictions(examples, reference) == (1, 2)


def test_contradictions_within_a_contribution_use_the_majority() -> None:
    examples = [qa("2 km to m", "2000 m")] * 3 + [qa("2 km to m", "3000 m"), qa("1 kg", "1000 g")]
    assert contradictions(examples, []) == (1, 4)


def test_a_prompt_whose_last_turn_is_not_an_answer_is_not_checkable() -> None:
    dangling = Example(
        "messages", (Message("user", "q"), Message("assistant", "a"), Message("user", "q2"))
    )
    assert contradictions([dangling, dangling], []) == (0, 0)


def test_contradiction_checks_below_the_minimum_do_not_reject(
    tiny_base: BaseModel, eval_examples: list[Example]
) -> None:
    # Four contradicting answers to the eval set's own prompts: rate 1.0, but only 4 checks.
    wrong = [
        {"messages": [*r["messages"][:-1], {"role": "assistant", "content": "Triage: never."}]}
        for r in domain_examples("clinic", 20, 10_000)[:4]
    ]
    filler = [{"text": f"Note {i}: the river is {i} km long."} for i in range(30)]
    rules = dataclasses.replace(RULES, score_floor=-100.0)
    few = run(tiny_base, [("few", to_jsonl(wrong + filler))], eval_examples, rules).decision("few")
    assert few.evidence["contradiction_checkable"] == 4
    assert few.evidence["contradiction_rate"] == 1.0
    assert few.reason is Reason.ACCEPTED


# ---- the outlier rule --------------------------------------------------------------------


def test_no_outlier_threshold_below_three_scores() -> None:
    assert _outlier_threshold([], RULES) is None
    assert _outlier_threshold([0.5], RULES) is None
    assert _outlier_threshold([0.5, -3.0], RULES) is None


def test_outlier_threshold_worked_example() -> None:
    # median 1.0; |deviations| 0, .05, .1, .1, .8 -> MAD .1 -> 1.4826 * MAD = .14826,
    # below the relative floor .2 * 1.0; threshold = 1.0 - k * .2 (k = 2: .6)
    scores = [1.0, 1.1, 0.9, 1.05, 0.2]
    assert RULES.outlier_k == 2.0
    assert _outlier_threshold(scores, RULES) == pytest.approx(0.6)
    # A wider spread: MAD .3 -> spread .44478 -> threshold 1.0 - k * .44478
    wide = [1.0, 1.3, 0.7, 1.4, 0.6]
    assert _outlier_threshold(wide, RULES) == pytest.approx(1.0 - 2 * 1.4826 * 0.3)
    # An even count takes the mean of the middle two.
    assert _outlier_threshold([1.0, 1.0, 2.0, 2.0], RULES) == pytest.approx(1.5 - 2 * 1.4826 * 0.5)


def test_outlier_threshold_of_equal_scores_uses_the_relative_floor() -> None:
    assert _outlier_threshold([0.8] * 5, RULES) == pytest.approx(0.8 - 2 * 0.2 * 0.8)
    assert _outlier_threshold([0.0] * 4, RULES) == 0.0
    assert _outlier_threshold([-0.5] * 3, RULES) == pytest.approx(-0.5 - 2 * 0.2 * 0.5)


def test_one_extreme_score_does_not_drag_the_threshold() -> None:
    scores = [1.0, 1.1, 0.9, 1.05, 0.95, -100.0]
    threshold = _outlier_threshold(scores, RULES)
    assert threshold is not None
    assert [s for s in scores if s < threshold] == [-100.0]


def test_outlier_threshold_follows_the_rules() -> None:
    scores = [1.0, 1.3, 0.7, 1.4, 0.6]
    by_k = [_outlier_threshold(scores, dataclasses.replace(RULES, outlier_k=k)) for k in (1, 3, 5)]
    assert by_k == sorted((t for t in by_k if t is not None), reverse=True)
    assert by_k[1] == _outlier_threshold(scores, dataclasses.replace(RULES, outlier_k=3))
    floor = dataclasses.replace(RULES, min_relative_spread=2.0)
    assert _outlier_threshold(scores, floor) == pytest.approx(1.0 - 2 * 2.0)


finite = st.floats(-10, 10, allow_nan=False)


@given(st.lists(finite, min_size=3, max_size=30))
def test_the_threshold_never_flags_half_the_contributors(scores: list[float]) -> None:
    threshold = _outlier_threshold(scores, RULES)
    assert threshold is not None
    ordered = sorted(scores)
    median = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    assert threshold <= median
    assert sum(s < threshold for s in scores) < len(scores) / 2
    assert _outlier_threshold(list(reversed(scores)), RULES) == threshold


@given(st.lists(finite, min_size=3, max_size=30), st.floats(0.01, 100))
def test_the_threshold_scales_with_the_scores(scores: list[float], factor: float) -> None:
    threshold = _outlier_threshold(scores, RULES)
    scaled = _outlier_threshold([s * factor for s in scores], RULES)
    assert threshold is not None
    assert scaled is not None
    assert scaled == pytest.approx(threshold * factor, rel=1e-9, abs=1e-6)


# ---- the session's size caps -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "why"),
    [
        (dataclasses.replace(RULES, max_contribution_bytes=3_000), "over_limit"),
        (dataclasses.replace(RULES, max_examples=30), "over_limit"),
        (dataclasses.replace(RULES, max_tokens=3_000), "tokens"),
    ],
    ids=["bytes", "examples", "tokens"],
)
def test_a_contribution_over_a_size_cap_is_too_large_and_never_probed(
    tiny_base: BaseModel, eval_examples: list[Example], rules: GateRules, why: str
) -> None:
    big = to_jsonl(domain_examples("clinic", 60, seed=5))
    small = to_jsonl(domain_examples("units", 25, seed=6))
    assert len(small) < 3_000 < len(big)
    gate = run(tiny_base, [("big", big), ("small", small)], eval_examples, rules)
    decision = gate.decision("big")
    assert (decision.accepted, decision.reason, decision.score) == (False, Reason.TOO_LARGE, None)
    assert why in decision.evidence
    if why == "tokens":
        assert decision.evidence["tokens"] == "more than 3000"
    assert ("big", "probe") not in gate.progress
    assert gate.decision("small").reason is not Reason.TOO_LARGE


def test_a_huge_integer_is_one_invalid_line_of_its_contribution(
    tiny_base: BaseModel, eval_examples: list[Example]
) -> None:
    records = domain_examples("clinic", 40, seed=8)
    bigint = b'{"text": "x", "n": ' + b"9" * 5000 + b"}\n"
    gate = run(
        tiny_base, [("bigint", to_jsonl(records) + bigint), ("clean", to_jsonl(records[:30]))],
        eval_examples, dataclasses.replace(RULES, max_cross_duplicate_rate=1.0),
    )  # fmt: skip
    decision = gate.decision("bigint")
    assert decision.reason is Reason.INVALID_LINES
    assert decision.evidence["invalid_lines"] == 1


def test_the_gate_records_the_commitment_it_is_given(
    tiny_base: BaseModel, eval_examples: list[Example]
) -> None:
    data = to_jsonl(domain_examples("units", 10, seed=9))
    report = run_gate(
        tiny_base, [("a", data)], eval_examples, RULES, commitment=lambda who, d: f"{who}:{len(d)}"
    )
    assert report.decisions[0].evidence["dataset_commitment"] == f"a:{len(data)}"
    assert hashlib.sha256(data).hexdigest() not in json.dumps(report.to_dict())


# ---- one contribution's data cannot break the gate for the others ------------------------------


def test_a_lone_surrogate_is_an_invalid_line_of_its_contribution(
    tiny_base: BaseModel, eval_examples: list[Example]
) -> None:
    records = domain_examples("units", 30, seed=11)
    broken = to_jsonl(records) + b'{"text": "hello \\ud800 world"}\n'
    gate = run(
        tiny_base, [("broken", broken), ("clean", to_jsonl(domain_examples("clinic", 30, 12)))],
        eval_examples,
    )  # fmt: skip
    assert gate.decision("broken").reason is Reason.INVALID_LINES
    assert gate.decision("broken").evidence["invalid_lines"] == 1
    assert gate.decision("clean").score is not None


def test_whatever_a_contributions_data_raises_rejects_it_alone(
    base: BaseModel, eval_examples: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cotune.training import gate as gate_module

    real_encode = gate_module.encode_example
    real_probe = gate_module._probe

    def encode(example: Example, *args: Any) -> Any:
        if "poison-encode" in example.canonical():
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
        return real_encode(example, *args)

    def probe(*args: Any) -> Any:
        if args[-1]["contributor"] == "bad_probe":  # its evidence names it
            raise RuntimeError("probe exploded on this data")
        return real_probe(*args)

    monkeypatch.setattr(gate_module, "encode_example", encode)
    monkeypatch.setattr(gate_module, "_probe", probe)
    bad_encode = [{"text": f"poison-encode {i} " + "word " * 5} for i in range(30)]
    gate = run(
        base,
        [
            ("clean", to_jsonl(domain_examples("clinic", 30, seed=21))),
            ("bad_encode", to_jsonl(bad_encode)),
            ("bad_probe", to_jsonl(domain_examples("units", 30, seed=22))),
        ],
        eval_examples,
    )
    encode_failed, probe_failed = gate.decision("bad_encode"), gate.decision("bad_probe")
    assert (encode_failed.reason, probe_failed.reason) == (Reason.INVALID_LINES,) * 2
    assert encode_failed.evidence["encode_error"].startswith("TypeError: TextEncodeInput")
    assert probe_failed.evidence["probe_error"] == "RuntimeError: probe exploded on this data"
    assert gate.decision("clean").score is not None


def test_when_every_probe_fails_it_is_the_systems_fault(
    base: BaseModel, eval_examples: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cotune.training import gate as gate_module

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gate_module, "train_encoded", broken)
    contributions = [(d, to_jsonl(domain_examples(d, 30, seed=31))) for d in ("clinic", "units")]
    with pytest.raises(RuntimeError, match="out of memory"):
        run(base, contributions, eval_examples)


def test_an_eval_set_with_nothing_to_score_is_refused(tiny_base: BaseModel) -> None:
    from cotune.training.gate import EvalSetError

    too_long = to_examples([{"instruction": "word " * 300, "output": "a"}])
    with pytest.raises(EvalSetError, match="no eval example keeps a loss-carrying token"):
        run(tiny_base, [("a", to_jsonl(domain_examples("units", 30, 1)))], too_long)


def test_an_oversized_contribution_stops_encoding_at_the_cap(
    tiny_base: BaseModel, eval_examples: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cotune.training import gate as gate_module

    calls = {"n": 0}
    real_encode = gate_module.encode_example

    def counted(*args: Any) -> Any:
        calls["n"] += 1
        return real_encode(*args)

    monkeypatch.setattr(gate_module, "encode_example", counted)
    big = to_jsonl(domain_examples("clinic", 200, seed=41))
    rules = dataclasses.replace(RULES, max_tokens=2_000)
    gate = run(tiny_base, [("big", big)], eval_examples, rules)
    assert gate.decision("big").reason is Reason.TOO_LARGE
    assert gate.decision("big").evidence["tokens"] == "more than 2000"
    assert calls["n"] < 40  # stopped at the cap, not after all 200
