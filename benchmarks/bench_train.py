"""Training throughput of cotune's trainer against a plain ``transformers.Trainer`` + peft run.

Both runs train the same LoRA (rank, alpha, target modules, learning rate, warm-up then
linear decay, AdamW without weight decay, gradient clipping at 1.0, batch size, epochs,
seed) on ``cotune-tiny`` from the same base weights, on the same examples: the three
clean demo contributors, both encoded by ``cotune.training.encoding.encode_all`` so both
see identical token ids and loss masks. cotune packs whole examples into ``seq_len``
rows (short examples share a row, attention kept block-diagonal), computes logits on
loss-carrying positions only and runs its own loop; the baseline is an ordinary
``Trainer`` over one example per row, padded per batch by ``DataCollatorForSeq2Seq`` (no
evaluation, no saving, no logging, ``report_to="none"``). A batch is ``batch_size``
examples on both sides, so both make the same number of updates. Tokens are real
(non-padding) tokens processed.

The machine is shared and noisy: other processes take the cores for seconds at a time.
With two torch threads on two busy cores, one thread waits on the other and the same run
can take up to 50 times as long; one thread (``--threads``, default 1) keeps timings steady.
The runs also alternate (cotune, baseline, baseline, cotune, ...), every optimisation
step's end is timed, and the headline throughput is tokens / (steps x median step time),
the best over the repeats; the plain wall-clock loop throughput (set-up excluded, for
both) and the end-to-end one (encoding, packing, LoRA and Trainer set-up included) are
reported beside it. Both adapters are scored with cotune's ``evaluate`` on the demo eval
set; the base model is re-evaluated at the end to show that both adapters were detached.
Repeat ``i`` uses seed ``i`` on both sides, and the eval losses compared are the means
over the repeats: one seed's loss moves by +-0.02 with the data order alone.

Last line: a JSON object with cotune_tok_s, baseline_tok_s, ratio (cotune / baseline),
cotune_eval_loss, baseline_eval_loss, cotune_accuracy, baseline_accuracy (task accuracy of
greedy replies, mean over seeds), the wall-clock variants, step counts and the
settings. Goal (reported, not asserted): ratio >= 1.3 with an eval loss no worse than the
baseline's.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from peft import PeftModel
from transformers import (
    DataCollatorForSeq2Seq,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from cotune.training.base_model import BaseModel, load_base
from cotune.training.config import LoraHyperparams
from cotune.training.data import Example, load_dataset
from cotune.training.encoding import encode_all
from cotune.training.evaluate import EvalResult, evaluate
from cotune.training.synthetic import demo_data
from cotune.training.trainer import attach_lora, detach_lora, train_lora


def _examples(records: Sequence[dict[str, Any]], source: str) -> list[Example]:
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    return list(load_dataset(data, source).examples)


def _reseed(seed: int) -> None:
    random.seed(seed)
    set_seed(seed)  # python, numpy and torch


class _Rows(torch.utils.data.Dataset[dict[str, list[int]]]):
    """One encoded example per row, as the Trainer's collator expects."""

    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.rows[index]


class _CountingCollator:
    """``DataCollatorForSeq2Seq``, counting the real (attention-mask) tokens it hands out."""

    def __init__(self, inner: DataCollatorForSeq2Seq) -> None:
        self.inner = inner
        self.tokens = 0

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.inner(features)
        self.tokens += int(batch["attention_mask"].sum())
        return batch


class _LoopTimer(TrainerCallback):
    """Wall time of the training loop, and the moment each optimisation step ends."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.step_ends: list[float] = []

    def on_train_begin(self, *_args: Any, **_kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, *_args: Any, **_kwargs: Any) -> None:
        self.step_ends.append(time.perf_counter())

    def on_train_end(self, *_args: Any, **_kwargs: Any) -> None:
        self.end = time.perf_counter()


def _median_step(step_ends: list[float]) -> float:
    """Median time between consecutive step ends (the first step, with its warm-up, is out)."""
    gaps = [b - a for a, b in itertools.pairwise(step_ends)]
    return statistics.median(gaps) if gaps else float("nan")


def run_cotune(
    base: BaseModel, train: list[Example], eval_set: list[Example], hp: LoraHyperparams
) -> dict[str, float]:
    """The cotune trainer (``train_lora``): packed blocks, its own loop."""
    _reseed(hp.seed)
    step_ends: list[float] = []
    start = time.perf_counter()
    result = train_lora(base, train, hp, on_step=lambda *_: step_ends.append(time.perf_counter()))
    total = time.perf_counter() - start
    try:
        scored = evaluate(base, eval_set, model=result.model, accuracy=True)
    finally:
        detach_lora(result.model)
    return {
        "tokens": result.tokens,
        "loop_s": result.seconds,
        "total_s": total,
        "median_step_s": _median_step(step_ends),
        "steps": result.steps,
        "eval_loss": scored.loss,
        "accuracy": _accuracy(scored),
    }


def _accuracy(scored: EvalResult) -> float:
    assert scored.task_accuracy is not None
    return scored.task_accuracy.accuracy


def run_baseline(
    base: BaseModel, train: list[Example], eval_set: list[Example], hp: LoraHyperparams
) -> dict[str, float]:
    """A plain ``transformers.Trainer`` over peft: one padded example per row."""
    _reseed(hp.seed)
    start = time.perf_counter()
    encoded = encode_all(train, base.tokenizer, hp.seq_len)
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]
    model = attach_lora(base, hp)  # the same adapter, initialised the same way, as cotune's
    collator = _CountingCollator(
        DataCollatorForSeq2Seq(base.tokenizer, padding=True, label_pad_token_id=-100)
    )
    timer = _LoopTimer()
    with tempfile.TemporaryDirectory(prefix="cotune-bench-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=hp.batch_size,
            num_train_epochs=hp.epochs,
            max_steps=hp.max_steps or -1,
            learning_rate=hp.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=hp.warmup_steps,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",
            seed=hp.seed,
            data_seed=hp.seed,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=base.device.type == "cpu",
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            remove_unused_columns=False,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=_Rows(rows),
            data_collator=collator,
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)  # keep stdout for the JSON line
        output = trainer.train()
    total = time.perf_counter() - start
    peft_model: PeftModel = model
    try:
        scored = evaluate(base, eval_set, model=peft_model, accuracy=True)
    finally:
        detach_lora(peft_model)
        base.model.train(False)  # the Trainer left it in training mode
    return {
        "tokens": collator.tokens,
        "loop_s": timer.end - timer.start,
        "total_s": total,
        "median_step_s": _median_step(timer.step_ends),
        "steps": output.global_step,
        "eval_loss": scored.loss,
        "accuracy": _accuracy(scored),
    }


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=LoraHyperparams.epochs)
    parser.add_argument("--examples-per-contributor", type=int, default=200)
    parser.add_argument(
        "--repeats", type=int, default=4, help="runs per side, alternating (best time kept)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hp = dataclasses.replace(LoraHyperparams(), epochs=args.epochs)
    data = demo_data(examples_per_contributor=args.examples_per_contributor)
    train = [e for name, r in data.contributors.items() for e in _examples(r, name)]
    eval_set = _examples(data.eval_set, "eval")
    # train_lora switches this on for the whole process; switch it on first, for both sides
    torch.use_deterministic_algorithms(True, warn_only=True)
    base = load_base("cotune-tiny")
    base_loss = evaluate(base, eval_set).loss

    runs: dict[str, list[dict[str, float]]] = {"cotune": [], "baseline": []}
    for i in range(args.repeats):
        order = ("cotune", "baseline") if i % 2 == 0 else ("baseline", "cotune")
        for side in order:
            run = run_cotune if side == "cotune" else run_baseline
            runs[side].append(run(base, train, eval_set, dataclasses.replace(hp, seed=i)))
    base_after = evaluate(base, eval_set).loss

    def best(side: str, seconds: Callable[[dict[str, float]], float]) -> float:
        return round(max(r["tokens"] / seconds(r) for r in runs[side]), 1)

    cotune, baseline = runs["cotune"][0], runs["baseline"][0]
    mean_loss = {side: statistics.mean(r["eval_loss"] for r in runs[side]) for side in runs}
    result: dict[str, Any] = {
        "cotune_tok_s": best("cotune", lambda r: r["median_step_s"] * r["steps"]),
        "baseline_tok_s": best("baseline", lambda r: r["median_step_s"] * r["steps"]),
    }
    result["ratio"] = round(result["cotune_tok_s"] / result["baseline_tok_s"], 3)
    result["cotune_eval_loss"] = round(mean_loss["cotune"], 4)
    result["baseline_eval_loss"] = round(mean_loss["baseline"], 4)
    result["base_eval_loss"] = round(base_loss, 4)
    mean_accuracy = {side: statistics.mean(r["accuracy"] for r in runs[side]) for side in runs}
    result["cotune_accuracy"] = round(mean_accuracy["cotune"], 4)
    result["baseline_accuracy"] = round(mean_accuracy["baseline"], 4)
    result["base_restored"] = abs(base_after - base_loss) < 1e-6
    for name, key in (("loop", "loop_s"), ("end_to_end", "total_s")):
        mine = result[f"cotune_{name}_tok_s"] = best("cotune", lambda r, k=key: r[k])
        theirs = result[f"baseline_{name}_tok_s"] = best("baseline", lambda r, k=key: r[k])
        result[f"{name}_ratio"] = round(mine / theirs, 3)
    result["cotune_tokens"] = int(cotune["tokens"])
    result["baseline_tokens"] = int(baseline["tokens"])
    result["cotune_steps"] = int(cotune["steps"])
    result["baseline_steps"] = int(baseline["steps"])
    for side in ("cotune", "baseline"):
        result[f"{side}_loop_s"] = [round(r["loop_s"], 2) for r in runs[side]]
        result[f"{side}_median_step_s"] = [round(r["median_step_s"], 4) for r in runs[side]]
        result[f"{side}_eval_loss_by_seed"] = [round(r["eval_loss"], 4) for r in runs[side]]
    result["goals"] = {
        "ratio_ge_1_3": result["ratio"] >= 1.3,
        "eval_loss_no_worse": mean_loss["cotune"] <= mean_loss["baseline"],
        "accuracy_no_worse": mean_accuracy["cotune"] >= mean_accuracy["baseline"],
    }
    result |= {
        "epochs": hp.epochs,
        "examples_per_contributor": args.examples_per_contributor,
        "train_examples": len(train),
        "eval_examples": len(eval_set),
        "repeats": args.repeats,
        "hyperparams": hp.to_dict(),
        "device": str(base.device),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
