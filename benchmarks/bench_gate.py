"""Cost and accuracy of the quality gate, against the joint training it protects, in one run.

Two sessions on ``cotune-tiny`` with the default ``GateRules`` and ``LoraHyperparams``:

- 3 contributors: 2 clean (clinic, capitals) and 1 poisoned (``--poison``);
- 10 contributors: 6 clean (2 per sub-domain) and one of each of the 4 poison types.

Clean contributors of the same sub-domain hold disjoint slices of that sub-domain's
(seeded, shuffled) examples: the sub-domains have only 240 to 392 distinct examples, so
``domain_examples(domain, n, seed=k)`` for two seeds would share much of their data (52%
for clinic and capitals at 120 examples each, 83-85% at 200), and the gate rightly
rejects such pairs as cross-duplicates (``max_cross_duplicate_rate`` 0.5).
``--examples-per-contributor`` (default 120) must therefore fit twice in every
sub-domain.

For each session: wall time of ``run_gate`` over the wall time of ``train_lora`` on the
union of the accepted contributors (the ratio is what the gate adds to a session), and
which contributors it rejected. The machine is shared: with two torch threads on two busy
cores, one waits on the other and the same run can take up to 50 times as long, so torch
runs on one thread (``--threads``, default 1). A two-step warm-up run precedes both
timings, the gate and the joint run alternate ``--repeats`` times (default 3), and the
best time of each is kept (every run's time is reported). Gate and training are
deterministic, so every repeat makes the same decisions and the same adapter. The ratio
of optimisation steps (all probes' over the joint run's, same batch size) is reported
beside it: it ignores the gate's evaluations and set-up, so it is a lower bound that no
busy machine moves. Eval losses on the demo eval set: the base model, each session's joint
adapter, and a solo adapter per clean contributor (trained alone with the same
hyperparameters as the joint one). Both times are taken in the same run, on the same
shared machine, a few seconds apart.

Last line: a JSON object with gate_over_train ({"3": …, "10": …}), gate_over_train_steps,
poison_rejected, poison_total, clean_rejected, eval_loss ({"base", "joint": {"3", "10"},
"solo": {…}}), task_accuracy ({"joint", "solo"}: greedy replies carrying the answer),
per-session decisions and timings, and goals (reported, not asserted):
gate_over_train <= 0.3, every poison rejected, no clean contributor rejected, and every
joint adapter below the base model and below the solo adapter of each of its
contributors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import torch

from cotune.training.base_model import BaseModel, load_base
from cotune.training.config import LoraHyperparams
from cotune.training.data import Example, load_dataset
from cotune.training.evaluate import evaluate
from cotune.training.gate import GateRules, run_gate
from cotune.training.synthetic import DOMAINS, POISONS, demo_data, domain_examples
from cotune.training.trainer import detach_lora, train_lora

Record = dict[str, Any]
POISON_SEED = 1000


def _jsonl(records: Sequence[Record]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def _clean(count: int) -> dict[str, list[Record]]:
    """Two contributors per sub-domain, on disjoint slices of its examples."""
    clean: dict[str, list[Record]] = {}
    for domain, make in DOMAINS.items():
        size = len(make())
        if 2 * count > size:
            raise SystemExit(f"{domain} has {size} distinct examples: use at most {size // 2}")
        pool = domain_examples(domain, size, seed=0)
        for k in range(2):
            clean[f"{domain}_{k}"] = pool[k * count : (k + 1) * count]
    return clean


def _train_and_eval(
    base: BaseModel, examples: list[Example], eval_set: list[Example], hp: LoraHyperparams
) -> tuple[float, int, float, float]:
    """(wall seconds of train_lora, its steps, the adapter's eval loss and task accuracy)."""
    start = time.perf_counter()
    result = train_lora(base, examples, hp)
    seconds = time.perf_counter() - start
    try:
        scored = evaluate(base, eval_set, model=result.model, accuracy=True)
    finally:
        detach_lora(result.model)
    assert scored.task_accuracy is not None
    return seconds, result.steps, scored.loss, scored.task_accuracy.accuracy


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples-per-contributor", type=int, default=120)
    parser.add_argument("--eval-per-domain", type=int, default=20)
    parser.add_argument("--poison", choices=sorted(POISONS), default="off_domain")
    parser.add_argument("--sizes", default="3,10", help="sessions to run: 3, 10 or both")
    parser.add_argument("--no-solo", action="store_true", help="skip the solo adapters")
    parser.add_argument(
        "--repeats", type=int, default=3, help="gate and joint runs per session (best kept)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.examples_per_contributor
    sizes = [int(s) for s in args.sizes.split(",")]
    if not set(sizes) <= {3, 10}:
        raise SystemExit("--sizes takes 3, 10 or 3,10")

    clean = _clean(n)
    poisons = {f"poison_{name}": make(n, POISON_SEED) for name, make in POISONS.items()}
    sessions: dict[int, dict[str, list[Record]]] = {
        3: {
            "clinic_0": clean["clinic_0"],
            "capitals_0": clean["capitals_0"],
            f"poison_{args.poison}": poisons[f"poison_{args.poison}"],
        },
        10: clean | poisons,
    }
    eval_records = demo_data(examples_per_contributor=1, eval_per_domain=args.eval_per_domain)
    eval_set = list(load_dataset(_jsonl(eval_records.eval_set), "eval").examples)
    rules, hp = GateRules(), LoraHyperparams()
    base = load_base("cotune-tiny")
    base_loss = evaluate(base, eval_set).loss
    # One short run first, so neither timed side pays the first backward pass's set-up.
    _train_and_eval(base, eval_set, eval_set, dataclasses.replace(hp, max_steps=2))

    ratio: dict[str, float] = {}
    ratio_steps: dict[str, float] = {}  # probe steps / joint steps: immune to a busy machine
    joint: dict[str, float | None] = {}
    joint_accuracy: dict[str, float | None] = {}
    details: dict[str, Any] = {}
    poison_total = poison_rejected = clean_rejected = 0
    for size in sizes:
        contributions = [(name, _jsonl(records)) for name, records in sessions[size].items()]
        gate_times: list[float] = []
        train_times: list[float] = []
        steps, loss, accuracy = 0, None, None
        for _ in range(args.repeats):
            start = time.perf_counter()
            report = run_gate(base, contributions, eval_set, rules)
            gate_times.append(time.perf_counter() - start)
            union = [e for d in report.accepted for e in report.accepted_examples[d.contributor]]
            if not union:
                break
            train_s, steps, loss, accuracy = _train_and_eval(base, union, eval_set, hp)
            train_times.append(train_s)
        gate_s = min(gate_times)
        probe_steps = sum(d.evidence.get("probe_steps", 0) for d in report.decisions)
        for decision in report.decisions:
            if decision.contributor.startswith("poison_"):
                poison_total += 1
                poison_rejected += not decision.accepted
            else:
                clean_rejected += not decision.accepted
        train_s = min(train_times, default=0.0)
        joint[str(size)] = None if loss is None else round(loss, 4)
        joint_accuracy[str(size)] = None if accuracy is None else round(accuracy, 4)
        ratio[str(size)] = round(gate_s / train_s, 3) if train_s else float("inf")
        ratio_steps[str(size)] = round(probe_steps / steps, 3) if steps else float("inf")
        details[str(size)] = {
            "gate_s": round(gate_s, 3),
            "train_s": round(train_s, 3),
            "gate_s_runs": [round(t, 3) for t in gate_times],
            "train_s_runs": [round(t, 3) for t in train_times],
            "probe_steps": probe_steps,
            "train_steps": steps,
            "accepted_examples": sum(
                len(report.accepted_examples[d.contributor]) for d in report.accepted
            ),
            "decisions": {
                d.contributor: {
                    "reason": d.reason.name.lower(),
                    "score": None if d.score is None else round(d.score, 4),
                    "probe_steps": d.evidence.get("probe_steps"),
                }
                for d in report.decisions
            },
        }

    solo: dict[str, float] = {}
    solo_accuracy: dict[str, float] = {}
    if not args.no_solo:
        names = sorted({c for s in sizes for c in sessions[s] if not c.startswith("poison_")})
        for name in names:
            examples = list(load_dataset(_jsonl(clean[name]), name).examples)
            _, _, solo_loss, solo_acc = _train_and_eval(base, examples, eval_set, hp)
            solo[name], solo_accuracy[name] = round(solo_loss, 4), round(solo_acc, 4)

    def joint_wins(size: int) -> bool:
        loss = joint[str(size)]
        mine = [solo[c] for c in sessions[size] if c in solo]
        return loss is not None and loss < base_loss and all(loss < s for s in mine)

    result: dict[str, Any] = {
        "gate_over_train": ratio,
        "gate_over_train_steps": ratio_steps,
        "poison_rejected": poison_rejected,
        "poison_total": poison_total,
        "clean_rejected": clean_rejected,
        "eval_loss": {"base": round(base_loss, 4), "joint": joint, "solo": solo},
        "task_accuracy": {"joint": joint_accuracy, "solo": solo_accuracy},
        "sessions": details,
        "goals": {
            "gate_over_train_le_0_3": all(r <= 0.3 for r in ratio.values()),
            "every_poison_rejected": poison_rejected == poison_total,
            "no_clean_rejected": clean_rejected == 0,
            "joint_below_every_solo_and_base": None
            if args.no_solo
            else all(joint_wins(s) for s in sizes),
        },
        "examples_per_contributor": n,
        "eval_examples": len(eval_set),
        "poison_3": args.poison,
        "rules": json.loads(rules.canonical_json()),
        "hyperparams": hp.to_dict(),
        "device": str(base.device),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
