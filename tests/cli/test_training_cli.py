"""``cotune demo-data|train|eval|compare|gate`` driven as a user would, on cotune-tiny."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotune.cli.app import app

runner = CliRunner()
FAST = ["--max-steps", "6", "--seq-len", "128"]


def _run(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-data")
    written = _run("demo-data", str(out), "--examples", "40", "--eval-per-domain", "5")
    assert set(written) >= {"contributor_1_clinic", "poisoned/random_text", "eval"}
    return out


def test_demo_data_is_deterministic(data: Path, tmp_path: Path) -> None:
    _run("demo-data", str(tmp_path), "--examples", "40", "--eval-per-domain", "5")
    for name in ("contributor_2_capitals.jsonl", "eval.jsonl", "poisoned/off_domain.jsonl"):
        assert (tmp_path / name).read_bytes() == (data / name).read_bytes()


def test_train_eval_compare(data: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    clinic, units = data / "contributor_1_clinic.jsonl", data / "contributor_3_units.jsonl"
    trained = _run(
        "train", str(clinic), "--out", str(one), "--eval", str(data / "eval.jsonl"), *FAST
    )
    assert trained["steps"] == 6
    assert trained["eval"]["adapter"]["loss"] < trained["eval"]["base"]["loss"]
    assert {p.name for p in one.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "cotune.json",
    }
    _run("train", str(clinic), str(units), "--balance", "--out", str(two), *FAST)

    evaluated = _run("eval", str(data / "eval.jsonl"), "-a", str(one), "-a", str(two))
    assert evaluated[str(one)]["loss"] == pytest.approx(
        trained["eval"]["adapter"]["loss"], rel=1e-4
    )
    assert evaluated["base"]["loss"] > evaluated[str(two)]["loss"]
    accuracy = evaluated[str(two)]["task_accuracy"]
    assert accuracy["scored"] == 15  # 5 per domain, every one a prompt with a reply
    assert set(accuracy["by_tag"]) == {"clinic", "capitals", "units"}
    assert trained["eval"]["adapter"]["task_accuracy"] == evaluated[str(one)]["task_accuracy"]

    compared = _run("compare", str(one), str(two), "--eval", str(data / "eval.jsonl"))
    assert len(compared["modules"]) == 14  # 7 target modules x 2 layers
    assert all(-1.0 <= m["cosine"] <= 1.0 for m in compared["modules"])
    manifests = compared["manifests"]
    assert [d["name"] for d in manifests[str(two)]["datasets"]] == [clinic.name, units.name]
    text = runner.invoke(app, ["compare", str(one), str(two)])
    assert text.exit_code == 0 and "hyperparameters.rank" in text.output


def test_train_on_the_last_layers(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "top"
    clinic = str(data / "contributor_1_clinic.jsonl")
    _run("train", clinic, "--out", str(out), "--last-layers", "1", *FAST)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1]  # cotune-tiny has 2 layers
    assert json.loads((out / "cotune.json").read_text())["hyperparameters"]["last_layers"] == 1
    result = runner.invoke(
        app, ["train", clinic, "--out", str(tmp_path / "no"), "--last-layers", "3"]
    )
    assert result.exit_code == 1
    assert "last_layers is 3, but the base model has 2 layers: nothing was trained" in result.output
    assert not (tmp_path / "no").exists()


def test_train_refuses_bad_input(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"text": "fine"}\n{"messages": [{"role": "robot", "content": "x"}]}\nnot json\n'
    )
    out = tmp_path / "never"
    result = runner.invoke(app, ["train", str(bad), "--out", str(out), *FAST])
    assert result.exit_code == 1
    assert "line 2: messages[0].role: expected one of system, user, assistant" in result.output
    assert "line 3: (line): expected a JSON object, found invalid JSON" in result.output
    assert "nothing was trained" in result.output
    assert not out.exists()

    exists = tmp_path / "exists"
    exists.mkdir()
    result = runner.invoke(app, ["train", str(data / "eval.jsonl"), "--out", str(exists)])
    assert result.exit_code == 1 and "--overwrite" in result.output

    result = runner.invoke(
        app, ["train", str(data / "eval.jsonl"), "--out", str(out), "--rank", "0"]
    )
    assert result.exit_code == 1 and "rank must be >= 1" in result.output

    result = runner.invoke(
        app, ["train", str(data / "eval.jsonl"), "--out", str(out), "--base-model", str(tmp_path)]
    )
    assert result.exit_code == 1 and "not a Hugging Face model directory" in result.output


def test_gate_dry_run(data: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"probe_min_steps": 8, "min_examples": 10}))
    shown = _run(
        "gate",
        str(data / "eval.jsonl"),
        "--eval",
        str(data / "eval.jsonl"),
        "--rules",
        str(rules),
        "--show-rules",
    )
    assert shown["rules"]["probe_min_steps"] == 8 and shown["hash"].startswith("0x")
    files = [
        data / "contributor_1_clinic.jsonl",
        data / "contributor_2_capitals.jsonl",
        data / "poisoned" / "duplicated_spam.jsonl",
    ]
    report = _run(
        "gate", *map(str, files), "--eval", str(data / "eval.jsonl"), "--rules", str(rules)
    )
    verdicts = {d["contributor"]: d["reason"] for d in report["decisions"]}
    assert verdicts["duplicated_spam.jsonl"] == "duplicates"
    assert report["rules_hash"] == shown["hash"]
    rules.write_text(json.dumps({"probe_stepz": 8}))
    result = runner.invoke(
        app, ["gate", str(files[0]), "--eval", str(data / "eval.jsonl"), "--rules", str(rules)]
    )
    assert result.exit_code == 1 and "unknown gate rules: probe_stepz" in result.output
