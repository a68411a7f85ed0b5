"""The quality gate: reject contributions that would hurt or not help the joint model.

Structural checks come first (cheap, and nothing is trained on data that fails them):
the session's size caps (bytes, line length, examples, tokens), invalid lines, too few
examples, exact and near duplicates within a contribution, duplicates of other
contributors' data, and contradictions (the same prompt with a different answer,
within a contribution or against the owner's eval set). Then a
usefulness probe: a small LoRA per contributor on a bounded token budget, scored on
the owner's held-out eval set as the drop in eval loss from the base model. The
decision applies the session's ``GateRules``: an absolute floor and a robust outlier
test (below median - k * spread of the contributors' scores). The probe's first step
also measures how predictable the data is to the base model: data far less predictable
than the eval set (``max_data_loss_ratio``; random characters score about twice the
eval loss, real data of any sub-domain within a quarter of it) is rejected as
unintelligible without being scored, so it cannot sway the outlier test either.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from peft import PeftModel

from cotune.training.base_model import BaseModel
from cotune.training.config import LoraHyperparams
from cotune.training.data import Example, validate_bytes
from cotune.training.encoding import Encoded, encode_all, encode_example
from cotune.training.evaluate import EvalResult, TopLayerEval
from cotune.training.rules import SCORE_SCALE, GateRules, Reason
from cotune.training.trainer import detach_lora, train_encoded


class EvalSetError(ValueError):
    """The owner's eval set cannot score anything (no example keeps a label)."""


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on one contributor, with the evidence behind it."""

    contributor: str
    accepted: bool
    reason: Reason
    score: float | None
    weight: int
    evidence: dict[str, Any]

    @property
    def score_micro(self) -> int:
        """The score as the integer that goes on chain (0 when not scored)."""
        return round((self.score or 0.0) * SCORE_SCALE)

    @property
    def evidence_hash(self) -> bytes:
        """SHA-256 of the canonical evidence JSON."""
        canonical = json.dumps(self.evidence, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()

    def to_dict(self) -> dict[str, Any]:
        """The public report entry."""
        return {
            "contributor": self.contributor,
            "accepted": self.accepted,
            "reason": self.reason.name.lower(),
            "reason_code": int(self.reason),
            "score": self.score,
            "weight": self.weight,
            "evidence_hash": "0x" + self.evidence_hash.hex(),
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class GateReport:
    """Every decision, the base model's eval result, and the rules applied."""

    decisions: list[Decision]
    base_eval: EvalResult
    rules: GateRules
    accepted_examples: dict[str, list[Example]]
    accepted_encoded: dict[str, list[Encoded]]
    """The accepted examples encoded at the gate's ``seq_len`` (those with a label left)."""

    @property
    def accepted(self) -> list[Decision]:
        """Accepted contributors, in submission order."""
        return [d for d in self.decisions if d.accepted]

    def to_dict(self) -> dict[str, Any]:
        """The public gate report (decisions, scores, reason codes; no data)."""
        return {
            "rules": asdict(self.rules),
            "rules_hash": "0x" + self.rules.hash().hex(),
            "base_eval": self.base_eval.to_dict(),
            "decisions": [d.to_dict() for d in self.decisions],
        }


_NON_WORD = re.compile(r"[^\w]+")


def normalise(text: str) -> str:
    """Lower case, punctuation and runs of space collapsed: near duplicates compare equal."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def _prompt_and_answer(example: Example) -> tuple[str, str] | None:
    if example.kind == "text":
        return None
    *context, last = example.messages
    if last.role != "assistant":
        return None
    return normalise("\n".join(m.content for m in context)), normalise(last.content)


def contradictions(examples: Sequence[Example], reference: Sequence[Example]) -> tuple[int, int]:
    """Count (contradicted, checkable) examples against known answers.

    Checkable examples have a prompt with a known answer; contradicted ones answer it
    differently. A prompt's known answer is the reference's (the owner's eval set) or, failing that,
    the contribution's own majority answer when the prompt repeats.
    """
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    truth: dict[str, str] = {}
    for example in reference:
        pair = _prompt_and_answer(example)
        if pair is not None:
            truth[pair[0]] = pair[1]
    pairs = [p for p in map(_prompt_and_answer, examples) if p is not None]
    for prompt, answer in pairs:
        answers[prompt][answer] += 1
    contradicted = checkable = 0
    for prompt, answer in pairs:
        if prompt in truth:
            expected = truth[prompt]
        elif sum(answers[prompt].values()) > 1:
            expected = answers[prompt].most_common(1)[0][0]
        else:
            continue
        checkable += 1
        contradicted += answer != expected
    return contradicted, checkable


ProgressCallback = Callable[[str, str], None]
"""Called with (contributor, stage) as the gate works."""
Commitment = Callable[[str, bytes], str]
"""What the evidence records of a contribution's bytes, given (contributor, data)."""


def sha256_commitment(_contributor: str, data: bytes) -> str:
    """The plain SHA-256 of the data: for a gate run on one's own files."""
    return hashlib.sha256(data).hexdigest()


def run_gate(
    base: BaseModel,
    contributions: Sequence[tuple[str, bytes]],
    eval_examples: Sequence[Example],
    rules: GateRules,
    *,
    on_progress: ProgressCallback | None = None,
    seq_len: int = LoraHyperparams.seq_len,
    commitment: Commitment = sha256_commitment,
    sample_seed: str | None = None,
) -> GateReport:
    """Decide on every ``(contributor, jsonl bytes)``; nothing failing a check is trained on.

    Every contribution that passes the structural checks is encoded once, at ``seq_len``
    (the session's training length): its tokens are counted against ``max_tokens``, its
    probe trains on a sample of them, and the joint run can train on them
    (``accepted_encoded``). ``commitment`` is what the public evidence says of each
    contribution's bytes (the enclave passes a salted one; the default is its SHA-256);
    ``sample_seed`` seeds every probe's sample (default :func:`probe_sample_seed`, which
    anyone holding all the data can recompute; the enclave passes one only it can).

    Whatever one contribution's data makes encoding or its probe raise rejects that
    contributor alone (``invalid_lines``, with the error in its evidence); a failure of
    every probe is not theirs but the system's, and is raised. ``EvalSetError`` when the
    eval set leaves nothing to score.
    """
    notify = on_progress or (lambda _who, _stage: None)
    depth = int(base.model.config.num_hidden_layers)
    if rules.probe_last_layers > depth:
        raise ValueError(
            f"gate rule probe_last_layers is {rules.probe_last_layers}, "
            f"but the base model has {depth} layers"
        )
    eval_encoded = encode_all(eval_examples, base.tokenizer, LoraHyperparams.seq_len)
    if not eval_encoded:
        raise EvalSetError(
            f"no eval example keeps a loss-carrying token within {LoraHyperparams.seq_len} tokens"
        )
    # Probes adapt the top layers only: the layers below run on the eval set once.
    evaluator = TopLayerEval(base, eval_encoded, rules.probe_last_layers)
    base_eval = evaluator.base_eval
    parsed: dict[str, list[Example]] = {}
    evidence: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, Reason] = {}
    normalised: dict[str, set[str]] = {}
    for contributor, data in contributions:
        notify(contributor, "validate")
        examples, report = validate_bytes(data, contributor, rules.data_limits())
        texts = [normalise(e.canonical()) for e in examples]
        normalised[contributor] = set(texts)
        parsed[contributor] = examples
        evidence[contributor] = {
            "contributor": contributor,
            "dataset_commitment": commitment(contributor, data),
            "examples": len(examples),
            "invalid_lines": report.invalid,
            "invalid_rate": round(report.invalid_rate, 6),
            "duplicate_rate": round(1 - len(set(texts)) / len(texts), 6) if texts else 0.0,
            **_contradiction_evidence(examples, eval_examples),
            "rules_hash": "0x" + rules.hash().hex(),
            "base_eval_loss": round(base_eval.loss, 6),
        }
        if report.over_limit is not None:
            evidence[contributor]["over_limit"] = report.over_limit
    # Copies are judged against earlier submissions only: the first to commit a dataset
    # keeps it, a later copier is the one rejected.
    earlier: set[str] = set()
    for contributor, _ in contributions:
        unique = normalised[contributor]
        shared = len(unique & earlier) / len(unique) if unique else 0.0
        evidence[contributor]["cross_duplicate_rate"] = round(shared, 6)
        if evidence[contributor]["invalid_lines"] == 0:
            earlier |= unique
    del normalised, earlier
    encoded: dict[str, list[Encoded]] = {}
    for contributor, _ in contributions:
        verdicts[contributor] = _structural_reason(evidence[contributor], rules)
        if verdicts[contributor] is Reason.ACCEPTED:
            notify(contributor, "encode")
            verdicts[contributor], encoded[contributor] = _encode_contribution(
                base, parsed[contributor], seq_len, rules, evidence[contributor]
            )
        if verdicts[contributor] is not Reason.ACCEPTED:
            parsed[contributor] = []  # rejected: nothing of it is needed any more

    if sample_seed is None:
        sample_seed = probe_sample_seed(rules, [data for _, data in contributions])
    scores: dict[str, float] = {}
    failures: list[BaseException] = []
    probed = 0
    adapter: PeftModel | None = None  # one set of LoRA layers, re-initialised per probe
    try:
        for contributor, _ in contributions:
            if verdicts[contributor] is not Reason.ACCEPTED:
                continue
            notify(contributor, "probe")
            probed += 1
            hp = replace(rules.probe_hyperparams(len(parsed[contributor])), seq_len=seq_len)
            evidence[contributor]["probe_sample_seed"] = sample_seed
            try:
                adapter = _probe(
                    base, evaluator, encoded[contributor], hp, sample_seed, rules, adapter,
                    evidence[contributor],
                )  # fmt: skip
            except Exception as exc:  # this contribution's data broke its probe
                failures.append(exc)
                verdicts[contributor] = Reason.INVALID_LINES
                evidence[contributor]["probe_error"] = f"{type(exc).__name__}: {exc}"
                continue
            if "score" not in evidence[contributor]:
                verdicts[contributor] = Reason.UNINTELLIGIBLE
            else:
                scores[contributor] = evidence[contributor]["score"]
    finally:
        if adapter is not None:
            detach_lora(adapter)
    if failures and len(failures) == probed:
        raise failures[0]  # every probe failed: the system's fault, not the contributors'

    threshold, score_verdicts = judge_scores(scores, rules)
    for contributor, reason in score_verdicts.items():
        verdicts[contributor] = reason
        evidence[contributor]["outlier_threshold"] = threshold
    positive = {c: s for c, s in scores.items() if verdicts[c] is Reason.ACCEPTED}
    total = sum(positive.values())
    decisions = []
    for contributor, _ in contributions:
        reason = verdicts[contributor]
        evidence[contributor]["decision"] = reason.name.lower()
        weight = (
            max(1, round(SCORE_SCALE * positive[contributor] / total))
            if contributor in positive
            else 0
        )
        decisions.append(
            Decision(
                contributor,
                reason is Reason.ACCEPTED,
                reason,
                scores.get(contributor),
                weight,
                evidence[contributor],
            )
        )
    accepted = [d.contributor for d in decisions if d.accepted]
    return GateReport(
        decisions,
        base_eval,
        rules,
        {c: parsed[c] for c in accepted},
        {c: encoded[c] for c in accepted},
    )


def _probe(
    base: BaseModel,
    evaluator: TopLayerEval,
    encoded: list[Encoded],
    hp: LoraHyperparams,
    sample_seed: str,
    rules: GateRules,
    adapter: PeftModel | None,
    evidence: dict[str, Any],
) -> PeftModel:
    """Train one contributor's probe and score it into ``evidence`` (no score: unintelligible).

    Returns the LoRA layers, attached, for the next probe to re-use.
    """
    # The probe sees a sample of what it has the steps for.
    wanted = (hp.max_steps or 1) * hp.batch_size
    sample = random.Random(sample_seed).sample(encoded, min(wanted, len(encoded)))
    result = train_encoded(base, sample, hp, token_budget=rules.probe_token_budget, adapter=adapter)
    base_loss = evaluator.base_eval.loss
    # The first step ran the base model alone on the contribution's first batch.
    data_loss_ratio = result.first_loss / base_loss
    evidence |= {
        "probe_steps": result.steps,
        "probe_tokens": result.tokens,
        "data_loss": round(result.first_loss, 6),
        "data_loss_ratio": round(data_loss_ratio, 6),
    }
    if data_loss_ratio <= rules.max_data_loss_ratio:
        probe = evaluator.evaluate(result.model)
        evidence |= {
            "probe_eval_loss": round(probe.loss, 6),
            "score": round(base_loss - probe.loss, 6),
        }
    return result.model


def _encode_contribution(
    base: BaseModel,
    examples: Sequence[Example],
    seq_len: int,
    rules: GateRules,
    evidence: dict[str, Any],
) -> tuple[Reason, list[Encoded]]:
    """Encode one contribution; its verdict so far (tokens over the cap, nothing left...).

    Stops as soon as the tokens pass ``max_tokens``, so an oversized contribution costs
    no more than the cap.
    """
    encoded: list[Encoded] = []
    tokens = 0
    try:
        for example in examples:
            one = encode_example(example, base.tokenizer, seq_len)
            tokens += len(one.input_ids)
            if tokens > rules.max_tokens:
                evidence["tokens"] = f"more than {rules.max_tokens}"
                return Reason.TOO_LARGE, []
            if one.loss_tokens > 0:
                encoded.append(one)
    except MemoryError:
        raise
    except Exception as exc:  # this contribution's turns break the chat template, say
        evidence["encode_error"] = f"{type(exc).__name__}: {exc}"
        return Reason.INVALID_LINES, []
    evidence["tokens"] = tokens
    evidence["examples_with_labels"] = len(encoded)
    if not encoded:  # every prompt fills the sequence before its answer starts
        evidence["probe_error"] = (
            f"no training example has a loss-carrying token within {seq_len} tokens"
        )
        return Reason.TOO_FEW_EXAMPLES, []
    return Reason.ACCEPTED, encoded


def probe_sample_seed(rules: GateRules, contributions: Sequence[bytes]) -> str:
    """The seed of every probe's sample: the rules' seed and all contributions' hashes.

    The rules are public before anyone submits, so a sample seeded by them alone would
    tell a contributor which examples the probe sees (and where to hide a poison). The
    other contributions' plaintext is known to the enclave alone, so no contributor can
    predict this seed; anyone holding all the data can recompute it.
    """
    digests = sorted(hashlib.sha256(data).hexdigest() for data in contributions)
    mixed = hashlib.sha256(f"{rules.seed}:{','.join(digests)}".encode()).hexdigest()
    return "0x" + mixed


def judge_scores(
    scores: dict[str, float], rules: GateRules
) -> tuple[float | None, dict[str, Reason]]:
    """The outlier threshold and each probed contributor's verdict from the scores alone.

    The outlier test runs among those above the floor: a useless contribution's score
    would otherwise widen the spread and hide a weak poison.
    """
    above = [s for s in scores.values() if s >= rules.score_floor]
    threshold = _outlier_threshold(above, rules)
    verdicts = {}
    for contributor, score in scores.items():
        if score < rules.score_floor:
            verdicts[contributor] = Reason.BELOW_FLOOR
        elif threshold is not None and score < threshold:
            verdicts[contributor] = Reason.OUTLIER
        else:
            verdicts[contributor] = Reason.ACCEPTED
    return threshold, verdicts


def _contradiction_evidence(
    examples: Sequence[Example], reference: Sequence[Example]
) -> dict[str, float | int]:
    contradicted, checkable = contradictions(examples, reference)
    rate = contradicted / checkable if checkable else 0.0
    return {"contradiction_checkable": checkable, "contradiction_rate": round(rate, 6)}


def _structural_reason(evidence: dict[str, Any], rules: GateRules) -> Reason:
    if "over_limit" in evidence:
        return Reason.TOO_LARGE
    if evidence["invalid_rate"] > rules.max_invalid_rate or evidence["examples"] == 0:
        return Reason.INVALID_LINES
    if evidence["examples"] < rules.min_examples:
        return Reason.TOO_FEW_EXAMPLES
    if evidence["duplicate_rate"] > rules.max_duplicate_rate:
        return Reason.DUPLICATES
    if evidence["cross_duplicate_rate"] > rules.max_cross_duplicate_rate:
        return Reason.CROSS_DUPLICATES
    if (
        evidence["contradiction_checkable"] >= rules.min_contradiction_checks
        and evidence["contradiction_rate"] > rules.max_contradiction_rate
    ):
        return Reason.CONTRADICTIONS
    return Reason.ACCEPTED


def _outlier_threshold(scores: list[float], rules: GateRules) -> float | None:
    """Median - k * spread, with spread = max(1.4826 * MAD, relative floor); None below 3."""
    if len(scores) < 3:
        return None
    ordered = sorted(scores)
    median = _median(ordered)
    mad = _median(sorted(abs(s - median) for s in ordered))
    spread = max(1.4826 * mad, rules.min_relative_spread * abs(median))
    return median - rules.outlier_k * spread


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


__all__ = [
    "SCORE_SCALE",
    "Decision",
    "GateReport",
    "GateRules",
    "Reason",
    "contradictions",
    "judge_scores",
    "normalise",
    "probe_sample_seed",
    "run_gate",
    "sha256_commitment",
]
