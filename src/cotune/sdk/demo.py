"""The whole session in one process: what ``cotune demo`` (and ``make demo``) runs.

An embedded chain, a temporary local store and a dev enclave. An owner opens a session;
three contributors with different sub-domains and one poisoned contributor submit; the
aggregator gates, trains, seals and finalizes, and slashes the poisoned one; every
accepted contributor downloads. The first contributor's data is a published dataset
version: it submits with the publisher's signed entry, and the adapter's provenance
is verified from the model tokens down to the publisher's signature. For the comparison
table, a solo adapter per clean contributor is trained here too (outside the enclave:
the demo holds everyone's data).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotune.aggregator.pipeline import BaseModels
from cotune.aggregator.service import Aggregator, AggregatorConfig
from cotune.aggregator.state import Stage
from cotune.chain.clients.coordinator import ContributionStatus
from cotune.chain.connection import connect
from cotune.chain.deployment import deploy_all
from cotune.crypto.identity import Identity
from cotune.dataset.bundle import init_bundle
from cotune.dataset.provenance import DatasetClaim
from cotune.dataset.versions import VERSION_LOG_NAME, VersionLog
from cotune.sdk.client import Client, SessionOptions
from cotune.sdk.provenance import verify_provenance
from cotune.storage.local import LocalStore
from cotune.training.data import load_dataset
from cotune.training.evaluate import evaluate
from cotune.training.synthetic import demo_data
from cotune.training.trainer import detach_lora, train_lora

Notify = Callable[[str], None]
TrainProgress = Callable[[str, int, int, float], None]
"""Called with (run label, step, total steps, loss) during every training run."""
ETHER = 10**18
DEMO_OPERATOR_SECRET = "cotune-demo-operator"  # noqa: S105 - a throwaway demo enclave


@dataclass
class DemoResult:
    """Everything ``cotune demo`` reports."""

    contributors: list[dict[str, Any]] = field(default_factory=list)
    eval_loss: dict[str, Any] = field(default_factory=dict)
    task_accuracy: dict[str, Any] = field(default_factory=dict)
    """Greedy-reply accuracy on the eval set: base, joint and each solo, with per-domain."""
    adapter_sha256: dict[str, str] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return bool(self.checks) and all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        """The JSON ``cotune demo --json`` prints."""
        return {
            "ok": self.ok,
            "contributors": self.contributors,
            "eval_loss": self.eval_loss,
            "task_accuracy": self.task_accuracy,
            "adapter_sha256": self.adapter_sha256,
            "gas": self.gas,
            "seconds": self.seconds,
            "checks": self.checks,
        }


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def tree_sha256(directory: Path) -> str:
    """One hash over a directory's files (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run_demo(
    *,
    examples_per_contributor: int = 200,
    poison: str = "random_text",
    notify: Notify = lambda _: None,
    on_train_step: TrainProgress = lambda _label, _step, _total, _loss: None,
    workdir: Path | None = None,
) -> DemoResult:
    """Run one full session on an embedded chain; see the module docstring."""
    result = DemoResult()
    clock = time.perf_counter

    def stage(name: str, start: float) -> None:
        result.seconds[name] = round(result.seconds.get(name, 0.0) + clock() - start, 3)

    with tempfile.TemporaryDirectory(prefix="cotune-demo-") as tmp:
        work = workdir or Path(tmp)
        t = clock()
        notify("starting an embedded chain and deploying the contracts")
        chain = connect("embedded")
        operator, authority, owner_account = chain.dev_accounts[:3]
        deployment = deploy_all(chain, operator, dev_authority=authority.address)
        store = LocalStore(work / "store")
        stage("setup", t)

        t = clock()
        notify("starting the dev enclave (no hardware guarantee) and registering it")
        bases = BaseModels()
        base = bases("cotune-tiny")
        aggregator = Aggregator(
            chain,
            deployment,
            store,
            AggregatorConfig(work / "aggregator", operator_secret=DEMO_OPERATOR_SECRET),
            bases=bases,
            on_train_step=lambda step, total, loss: on_train_step("joint", step, total, loss),
        )
        enclave_id = aggregator.register(authority, operator)
        stage("enclave", t)

        data = demo_data(examples_per_contributor=examples_per_contributor)
        files = {name: _jsonl(records) for name, records in data.contributors.items()}
        files[f"poisoned_{poison}"] = _jsonl(data.poisoned[poison])
        eval_bytes = _jsonl(data.eval_set)
        names = list(files)
        parties = {name: Identity.generate() for name in names}
        owner = Client(chain, deployment, store, Identity(owner_account, Identity.generate().hpke))
        clients = {name: Client(chain, deployment, store, ident) for name, ident in parties.items()}
        for ident in parties.values():
            chain.fund(ident.address, 10 * ETHER)

        t = clock()
        notify(f"owner opens a session for {len(names)} contributors")
        session_id = owner.open_session(
            eval_bytes,
            SessionOptions(
                enclave_id=enclave_id,
                quorum=len(names),
                max_contributors=len(names),
                min_stake=ETHER // 10,
                reward_pool=ETHER,
                allow_list=tuple(ident.address for ident in parties.values()),
                pinned_measurement=aggregator.measurement,
            ),
        )
        result.gas["createSession"] = _gas(owner.contracts.coordinator.last_tx)
        stage("open", t)

        t = clock()
        published = names[0]
        notify(f"a publisher signs {published}'s data as version 1 of a dataset")
        claim = _publish(work / "dataset", files[published], Identity.generate())
        for name in names:
            notify(f"{name} encrypts its data to the enclave, uploads and commits")
            submitted = clients[name].submit(
                session_id,
                files[name],
                pinned_measurement=aggregator.measurement,
                dataset=claim if name == published else None,
            )
            result.gas[f"submit:{name}"] = submitted.tx.gas_used
        stage("submit", t)

        t = clock()
        notify("the aggregator gates, trains, seals and finalizes")
        aggregator.poll()
        record = aggregator.state.get(session_id)
        stage("aggregate", t)
        if record is None or record.stage is not Stage.DONE:
            error = record.error if record else "session never reached the aggregator"
            raise RuntimeError(f"the aggregator did not complete the session: {error}")
        outcome = record.result
        for name, gas in outcome.get("gas", {}).items():
            who = name.split(":", 1)
            label = who[0] if len(who) == 1 else f"{who[0]}:{_name_of(parties, who[1])}"
            result.gas[label] = gas
        for key, seconds in outcome.get("seconds", {}).items():
            result.seconds[f"enclave:{key}"] = seconds

        t = clock()
        decisions = {d["contributor"]: d for d in outcome["decisions"]}
        hashes: dict[str, str] = {}
        for name, ident in parties.items():
            decision = decisions[ident.address]
            result.contributors.append(
                {
                    "name": name,
                    "address": ident.address,
                    "decision": "accepted" if decision["accepted"] else "rejected",
                    "reason": decision["reason"],
                    "score": decision["score"],
                    "weight": decision["weight"],
                }
            )
            if decision["accepted"]:
                notify(f"{name} downloads and decrypts the adapter")
                out = clients[name].download(session_id, work / "downloads" / name)
                hashes[name] = tree_sha256(out)
        provenance = verify_provenance(work / "downloads" / published, (chain, deployment, store))
        notify(
            "provenance: "
            + "; ".join(f"{c.link} {'ok' if c.ok else 'FAILED'}" for c in provenance.checks)
        )
        result.adapter_sha256 = hashes
        stage("download", t)

        t = clock()
        notify("training a solo adapter per clean contributor, for comparison")
        eval_examples = list(load_dataset(eval_bytes, "eval").examples)
        spec_hp = SessionOptions(enclave_id=enclave_id).spec.hyperparams
        solo: dict[str, float] = {}
        solo_accuracy: dict[str, Any] = {}
        for name in data.contributors:
            label = f"solo {name}"

            def on_step(step: int, total: int, loss: float, label: str = label) -> None:
                on_train_step(label, step, total, loss)

            examples = list(load_dataset(files[name], name).examples)
            trained = train_lora(base, examples, spec_hp, on_step=on_step)
            try:
                scored = evaluate(base, eval_examples, model=trained.model, accuracy=True)
            finally:
                detach_lora(trained.model)
            solo[name] = round(scored.loss, 4)
            solo_accuracy[name] = scored.to_dict()["task_accuracy"]
        stage("solo", t)
        result.eval_loss = {
            "base": round(outcome["eval"]["base"], 4),
            "joint": round(outcome["eval"]["joint"], 4),
            "solo": solo,
        }
        session_eval = owner.report(session_id)["manifest"]["eval"]
        result.task_accuracy = {
            "base": session_eval["base"]["task_accuracy"],
            "joint": session_eval["adapter"]["task_accuracy"],
            "solo": solo_accuracy,
        }

        poisoned = f"poisoned_{poison}"
        poisoned_address = parties[poisoned].address
        slashed = (
            owner.contracts.coordinator.contribution(session_id, poisoned_address).status
            is ContributionStatus.SLASHED
        )
        clean_accepted = all(decisions[parties[n].address]["accepted"] for n in data.contributors)
        result.checks = {
            "every accepted contributor got identical adapters": len(set(hashes.values())) == 1
            and len(hashes) == sum(1 for d in decisions.values() if d["accepted"]),
            "every clean contributor accepted": clean_accepted,
            "the poisoned contributor was rejected": not decisions[poisoned_address]["accepted"],
            "the poisoned contributor was slashed": slashed,
            "joint adapter beats every solo adapter": all(
                result.eval_loss["joint"] < loss for loss in solo.values()
            ),
            "joint adapter beats the base model": result.eval_loss["joint"]
            < result.eval_loss["base"],
            "provenance verifies: tokens, session, contributions, dataset, publisher": (
                provenance.ok and len(provenance.datasets) == 1
            ),
        }
    return result


def _publish(directory: Path, data: bytes, publisher: Identity) -> DatasetClaim:
    """A one-version dataset bundle of ``data`` signed by ``publisher``; its claim."""
    directory.mkdir(parents=True)
    source = directory / "source.jsonl"
    source.write_bytes(data)
    bundle = init_bundle(
        directory / "bundle",
        source,
        dataset_id="demo-notes",
        name="Demo notes",
        created_by=publisher.address,
    )
    signed = VersionLog.open(directory / "bundle" / VERSION_LOG_NAME).append(
        bundle, publisher.account
    )
    return DatasetClaim(signed)


def _gas(tx: Any) -> int:
    return int(tx.gas_used) if tx is not None else 0


def _name_of(parties: dict[str, Identity], address: str) -> str:
    for name, ident in parties.items():
        if ident.address.lower() == address.lower():
            return name
    return address
