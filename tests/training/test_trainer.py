"""LoRA training, evaluation and adapters: learning, reproducibility, saving, reloading."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from training_helpers import lora_modules, to_examples

from cotune.training import trainer
from cotune.training.adapter import ADAPTER_FILES, build_manifest, read_manifest, save_adapter
from cotune.training.base_model import BaseModel
from cotune.training.config import DEFAULT_TARGET_MODULES, LoraHyperparams
from cotune.training.data import Example
from cotune.training.evaluate import EvalResult, evaluate
from cotune.training.manifest import MANIFEST_FORMAT, MANIFEST_NAME, DatasetRecord
from cotune.training.synthetic import DemoData, domain_examples
from cotune.training.trainer import attach_lora, balance_sources, detach_lora, train_lora

HP = LoraHyperparams(max_steps=30, seed=0)
"""The short run: 30 steps of 8 packed 256-token rows."""
PROBE_IDS = torch.tensor([[257, 84, 82, 68, 81, 198, 71, 102, 75, 75, 78, 258, 198, 257, 64]])


def logits(base: BaseModel, model: torch.nn.Module | None = None) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = (model or base.model)(input_ids=PROBE_IDS.to(base.device)).logits
    return out.detach().cpu()


def file_hashes(adapter_dir: Path) -> dict[str, str]:
    """SHA-256 of every file of an adapter dir (the three adapter files must be there)."""
    hashes = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(adapter_dir.iterdir())
    }
    assert set(ADAPTER_FILES) <= set(hashes)
    return hashes


@dataclass(frozen=True)
class Run:
    """One finished, saved and detached training run."""

    hp: LoraHyperparams
    steps: int
    tokens: int
    eval_adapter: EvalResult
    adapter_dir: Path


@dataclass(frozen=True)
class Clinic:
    """The clinic contributor's data, its eval slice, and the base model's eval on it."""

    train: list[Example]
    eval: list[Example]
    base_eval: EvalResult
    base_logits: torch.Tensor
    sha256: str


@pytest.fixture(scope="module")
def clinic(tiny_base: BaseModel, demo: DemoData) -> Clinic:
    records = demo.contributors["contributor_1_clinic"]
    # The clinic slice of the demo eval set (demo_data draws it with seed + 10_000).
    eval_records = domain_examples("clinic", 20, 10_000)
    assert all(r | {"tag": "clinic"} in demo.eval_set for r in eval_records)
    sha = hashlib.sha256(json.dumps(records).encode()).hexdigest()
    eval_examples = to_examples(eval_records)
    return Clinic(
        to_examples(records),
        eval_examples,
        evaluate(tiny_base, eval_examples),
        logits(tiny_base),
        sha,
    )


def train_and_save(
    base: BaseModel, clinic: Clinic, hp: LoraHyperparams, out_dir: Path
) -> tuple[Run, EvalResult]:
    """Train on the clinic data, save with a manifest, detach; also eval before detaching."""
    result = train_lora(base, clinic.train, hp)
    try:
        adapter_eval = evaluate(base, clinic.eval, model=result.model)
        manifest = build_manifest(
            base,
            hp,
            [DatasetRecord("contributor_1_clinic", clinic.sha256, len(clinic.train))],
            steps=result.steps,
            tokens=result.tokens,
            eval_base=clinic.base_eval,
            eval_adapter=adapter_eval,
        )
        save_adapter(result.model, out_dir, manifest)
    finally:
        detach_lora(result.model)
    return Run(hp, result.steps, result.tokens, adapter_eval, out_dir), adapter_eval


@pytest.fixture(scope="module")
def first_run(
    tiny_base: BaseModel, clinic: Clinic, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    out = tmp_path_factory.mktemp("adapters") / "seed0-a"
    run, _ = train_and_save(tiny_base, clinic, HP, out)
    assert lora_modules(tiny_base.model) == []
    return run


def test_a_short_run_lowers_eval_loss_on_its_domain(first_run: Run, clinic: Clinic) -> None:
    assert first_run.steps == 30
    assert first_run.tokens > 30 * 4 * 128  # packed rows are mostly full
    base_loss, tuned_loss = clinic.base_eval.loss, first_run.eval_adapter.loss
    assert tuned_loss < 0.6 * base_loss, (base_loss, tuned_loss)
    assert first_run.eval_adapter.tokens == clinic.base_eval.tokens
    assert first_run.eval_adapter.examples == len(clinic.eval) == 20


def test_same_inputs_and_seed_give_byte_identical_adapters(
    base: BaseModel, clinic: Clinic, first_run: Run, tmp_path: Path
) -> None:
    again, _ = train_and_save(base, clinic, HP, tmp_path / "seed0-b")
    assert file_hashes(again.adapter_dir) == file_hashes(first_run.adapter_dir)


def test_a_different_seed_gives_different_bytes(
    base: BaseModel, clinic: Clinic, first_run: Run, tmp_path: Path
) -> None:
    hp = LoraHyperparams(max_steps=30, seed=1)
    other, other_eval = train_and_save(base, clinic, hp, tmp_path / "seed1")
    first, second = file_hashes(first_run.adapter_dir), file_hashes(other.adapter_dir)
    assert first["adapter_model.safetensors"] != second["adapter_model.safetensors"]
    assert first[MANIFEST_NAME] != second[MANIFEST_NAME]
    assert other_eval.loss < clinic.base_eval.loss  # it learns too, just differently


def test_the_saved_adapter_reloads_with_the_same_eval_loss(
    base: BaseModel, clinic: Clinic, first_run: Run
) -> None:
    loaded = PeftModel.from_pretrained(base.model, str(first_run.adapter_dir))
    try:
        reloaded = evaluate(base, clinic.eval, model=loaded)
    finally:
        detach_lora(loaded)
    assert reloaded.loss == pytest.approx(first_run.eval_adapter.loss, abs=1e-6)
    assert reloaded.tokens == first_run.eval_adapter.tokens


def test_the_manifest_records_the_run(base: BaseModel, clinic: Clinic, first_run: Run) -> None:
    manifest = read_manifest(first_run.adapter_dir)
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["base_model"] == {"id": "cotune-tiny", "sha256": base.sha256}
    assert LoraHyperparams.from_dict(manifest["hyperparameters"]) == HP
    assert manifest["datasets"] == [
        {"name": "contributor_1_clinic", "sha256": clinic.sha256, "examples": 200}
    ]
    assert manifest["training"] == {"steps": first_run.steps, "tokens": first_run.tokens}
    assert manifest["eval"]["base"] == clinic.base_eval.to_dict()
    assert manifest["eval"]["adapter"] == first_run.eval_adapter.to_dict()
    assert set(manifest["libraries"]) == {"cotune", "peft", "safetensors", "torch", "transformers"}
    config = json.loads((first_run.adapter_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (HP.rank, HP.alpha)
    assert set(config["target_modules"]) == set(DEFAULT_TARGET_MODULES)


def test_detach_restores_the_base_model_outputs_exactly(
    base: BaseModel, clinic: Clinic, first_run: Run
) -> None:
    assert torch.equal(logits(base), clinic.base_logits)  # after the module's runs
    result = train_lora(base, clinic.train[:40], LoraHyperparams(max_steps=3, seed=5))
    try:
        assert lora_modules(base.model)
        assert not torch.equal(logits(base, result.model), clinic.base_logits)
    finally:
        detach_lora(result.model)
    assert lora_modules(base.model) == []
    assert torch.equal(logits(base), clinic.base_logits)
    assert evaluate(base, clinic.eval) == clinic.base_eval


def test_token_budget_caps_the_steps_and_on_step_reports_each(
    base: BaseModel, clinic: Clinic
) -> None:
    seen: list[tuple[int, int, float]] = []
    hp = LoraHyperparams(max_steps=50, batch_size=2, seq_len=128, seed=3)
    result = train_lora(
        base, clinic.train[:30], hp, token_budget=300, on_step=lambda *a: seen.append(a)
    )
    detach_lora(result.model)
    assert 1 <= result.steps <= 3
    assert [(s, t) for s, t, _ in seen] == [(i + 1, result.steps) for i in range(result.steps)]
    assert seen[-1][2] == result.final_loss
    assert 0 < result.tokens <= result.steps * 2 * 128
    assert result.tokens_per_second > 0


def test_training_on_examples_without_loss_is_refused(base: BaseModel) -> None:
    too_long = to_examples(
        [
            {
                "messages": [
                    {"role": "user", "content": "x" * 200},
                    {"role": "assistant", "content": "y"},
                ]
            }
        ]
    )
    with pytest.raises(ValueError, match="no training example has a loss-carrying token"):
        train_lora(base, too_long, LoraHyperparams(seq_len=32, max_steps=1))
    assert lora_modules(base.model) == []


def test_evaluate_refuses_an_eval_set_without_loss(base: BaseModel) -> None:
    too_long = to_examples(
        [
            {
                "messages": [
                    {"role": "user", "content": "x" * 300},
                    {"role": "assistant", "content": "y"},
                ]
            }
        ]
    )
    with pytest.raises(ValueError, match="no example with a loss-carrying token"):
        evaluate(base, too_long)


def test_evaluate_with_nothing_predictable_is_refused(base: BaseModel) -> None:
    with pytest.raises(ValueError, match="no example with a loss-carrying token"):
        evaluate(base, [Example("text", text="abc")], max_length=1)


def test_evaluate_does_not_depend_on_the_batch_size(base: BaseModel, clinic: Clinic) -> None:
    one = evaluate(base, clinic.eval, batch_size=1)
    assert one.loss == pytest.approx(clinic.base_eval.loss, rel=1e-5)
    assert one.tokens == clinic.base_eval.tokens


# ---- balance_sources --------------------------------------------------------------------


def texts(prefix: str, n: int) -> list[Example]:
    return [Example("text", text=f"{prefix}{i}") for i in range(n)]


def test_balance_sources_resamples_every_source_to_the_mean() -> None:
    big, small, mid = texts("b", 50), texts("s", 4), texts("m", 21)
    balanced = balance_sources([big, small, mid], seed=0)
    counts = Counter(e.text[0] for e in balanced)
    assert counts == {"b": 25, "s": 25, "m": 25}
    # The small source is repeated evenly; the big one is sampled without repeats.
    small_counts = Counter(e.text for e in balanced if e.text[0] == "s")
    assert set(small_counts.values()) <= {6, 7}
    assert set(small_counts) == {e.text for e in small}
    assert len({e.text for e in balanced if e.text[0] == "b"}) == 25
    assert balance_sources([big, small, mid], seed=0) == balanced
    assert balance_sources([big, small, mid], seed=1) != balanced


def test_balance_sources_keeps_equal_sources_as_they_are() -> None:
    a, b = texts("a", 10), texts("b", 10)
    assert balance_sources([a, b], seed=4) == a + b


def test_balance_sources_of_nothing() -> None:
    assert balance_sources([], seed=0) == []
    assert balance_sources([[], []], seed=0) == []


# ---- LoraHyperparams ---------------------------------------------------------------------


def lora_weights(model: PeftModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_a_reused_adapter_trains_exactly_like_a_fresh_one(base: BaseModel, clinic: Clinic) -> None:
    hp = LoraHyperparams(max_steps=3, seed=4)
    fresh = train_lora(base, clinic.train[:40], hp)
    try:
        expected = lora_weights(fresh.model)
        other = train_lora(
            base, clinic.train[40:80], dataclasses.replace(hp, seed=9), adapter=fresh.model
        )
        assert other.model is fresh.model
        again = train_lora(base, clinic.train[:40], hp, adapter=fresh.model)
        got = lora_weights(again.model)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[name], expected[name]) for name in expected)
        assert (again.first_loss, again.final_loss) == (fresh.first_loss, fresh.final_loss)
    finally:
        detach_lora(fresh.model)


def test_a_failed_run_leaves_the_base_model_as_it_was(
    base: BaseModel, clinic: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_loss = trainer.token_loss

    def failing_on_the_third_step(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise MemoryError("out of memory (simulated)")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "token_loss", failing_on_the_third_step)
    with pytest.raises(MemoryError, match="simulated"):
        train_lora(base, clinic.train[:40], LoraHyperparams(max_steps=5))
    assert lora_modules(base.model) == []
    assert not base.model.training
    monkeypatch.undo()
    assert torch.equal(logits(base), clinic.base_logits)


def test_an_adapter_of_another_shape_is_refused(base: BaseModel, clinic: Clinic) -> None:
    result = train_lora(base, clinic.train[:16], LoraHyperparams(max_steps=1))
    try:
        with pytest.raises(ValueError, match="another LoRA shape"):
            train_lora(
                base, clinic.train[:16], LoraHyperparams(max_steps=1, rank=4), adapter=result.model
            )
        with pytest.raises(ValueError, match="another LoRA shape"):
            train_lora(
                base,
                clinic.train[:16],
                LoraHyperparams(max_steps=1, last_layers=1),
                adapter=result.model,
            )
    finally:
        detach_lora(result.model)


def test_last_layers_puts_lora_on_the_last_layers_only(base: BaseModel, clinic: Clinic) -> None:
    layers = base.model.config.num_hidden_layers
    result = train_lora(base, clinic.train[:16], LoraHyperparams(max_steps=1, last_layers=1))
    try:
        names = lora_modules(base.model)
        assert names
        assert all(f".layers.{layers - 1}." in name for name in names)
    finally:
        detach_lora(result.model)
    with pytest.raises(ValueError, match=f"the base model has {layers} layers"):
        train_lora(base, clinic.train[:16], LoraHyperparams(max_steps=1, last_layers=layers + 1))
    assert lora_modules(base.model) == []


def test_the_first_loss_is_the_base_models_own(base: BaseModel, clinic: Clinic) -> None:
    """The adapter starts as a no-op, so step 1's loss is the base model's on that batch."""
    examples = clinic.train[:12]
    result = train_lora(base, examples, LoraHyperparams(max_steps=2, batch_size=len(examples)))
    detach_lora(result.model)
    assert result.first_loss == pytest.approx(evaluate(base, examples).loss, rel=1e-5)
    assert result.final_loss < result.first_loss


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rank": 0}, "rank must be >= 1, got 0"),
        ({"alpha": 0}, "alpha must be >= 1, got 0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"dropout": -0.1}, "dropout must be in [0, 1), got -0.1"),
        ({"target_modules": ()}, "target_modules must name at least one module"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0, got 0.0"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"max_steps": 0}, "max_steps must be >= 1 when set, got 0"),
        ({"batch_size": 0}, "batch_size must be >= 1 and seq_len >= 8"),
        ({"seq_len": 7}, "batch_size must be >= 1 and seq_len >= 8"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0, got -1"),
        ({"last_layers": -1}, "last_layers must be >= 0, got -1"),
    ],
)
def test_hyperparams_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="invalid hyperparameters") as caught:
        LoraHyperparams(**changes)
    assert message in str(caught.value)


def test_hyperparams_report_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        LoraHyperparams(rank=0, epochs=0, warmup_steps=-2)
    assert str(caught.value) == (
        "invalid hyperparameters: rank must be >= 1, got 0; epochs must be >= 1, got 0; "
        "warmup_steps must be >= 0, got -2"
    )


def test_hyperparams_round_trip_through_json() -> None:
    hp = LoraHyperparams(rank=4, target_modules=("q_proj", "v_proj"), max_steps=7, seed=9)
    raw = json.loads(json.dumps(hp.to_dict()))
    assert raw["target_modules"] == ["q_proj", "v_proj"]
    assert LoraHyperparams.from_dict(raw) == hp
    assert LoraHyperparams.from_dict({}) == LoraHyperparams()


def test_hyperparams_from_dict_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown hyperparameters: learning_rte, ranks"):
        LoraHyperparams.from_dict({"ranks": 4, "learning_rte": 0.1, "seed": 1})


def test_hyperparams_from_dict_still_validates() -> None:
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoraHyperparams.from_dict({"rank": -1})


# ---- save_adapter and read_manifest ------------------------------------------------------


@pytest.fixture
def fresh_adapter(base: BaseModel) -> Iterator[PeftModel]:
    """An untrained adapter attached to the base model (detached after the test)."""
    model = attach_lora(base, LoraHyperparams(rank=2, target_modules=("q_proj",)))
    try:
        yield model
    finally:
        detach_lora(model)


def staging_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_save_adapter_refuses_an_existing_dir_without_overwrite(
    fresh_adapter: PeftModel, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists"):
        save_adapter(fresh_adapter, out, {"format": MANIFEST_FORMAT})
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert staging_leftovers(tmp_path) == []
    save_adapter(fresh_adapter, out, {"format": MANIFEST_FORMAT}, overwrite=True)
    assert set(ADAPTER_FILES) <= {p.name for p in out.iterdir()}
    assert read_manifest(out) == {"format": MANIFEST_FORMAT}


def test_save_adapter_leaves_no_partial_dir_when_it_fails(
    fresh_adapter: PeftModel, tmp_path: Path
) -> None:
    out = tmp_path / "nested" / "adapter"
    unserialisable = {"format": MANIFEST_FORMAT, "bad": object()}
    with pytest.raises(TypeError):
        save_adapter(fresh_adapter, out, unserialisable)
    assert not out.exists()
    assert staging_leftovers(out.parent) == []
    assert list(out.parent.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_adapter(fresh_adapter: PeftModel, tmp_path: Path) -> None:
    out = save_adapter(fresh_adapter, tmp_path / "adapter", {"format": MANIFEST_FORMAT, "v": 1})
    before = file_hashes(out)
    with pytest.raises(TypeError):
        save_adapter(fresh_adapter, out, {"bad": {1, 2}}, overwrite=True)
    assert file_hashes(out) == before
    assert staging_leftovers(tmp_path) == []


def test_read_manifest_of_a_dir_without_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a cotune adapter"):
        read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a cotune adapter"):
        read_manifest(tmp_path / "missing")


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"format": "cotune-adapter/0"}),
        json.dumps({"base_model": {}}),
        "{not json",
        "",
    ],
    ids=["old-format", "no-format", "invalid-json", "empty"],
)
def test_read_manifest_refuses_a_bad_manifest(tmp_path: Path, content: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(ValueError):
        read_manifest(tmp_path)


@pytest.mark.parametrize("content", ["[]", '"cotune-adapter/1"', "null"])
def test_read_manifest_refuses_a_non_object_manifest(tmp_path: Path, content: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(ValueError):
        read_manifest(tmp_path)


def test_build_manifest_is_deterministic_and_takes_extras(base: BaseModel) -> None:
    hp = LoraHyperparams()
    records = [DatasetRecord("a", "00" * 32, 3)]
    one = build_manifest(base, hp, records, steps=1, tokens=2)
    assert one == build_manifest(base, hp, records, steps=1, tokens=2)
    assert one["eval"] == {"base": None, "adapter": None}
    extra = build_manifest(base, hp, records, steps=1, tokens=2, extra={"session": "0x01"})
    assert extra == {**one, "session": "0x01"}
