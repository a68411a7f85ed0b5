"""The aggregator's HTTP API over a real (embedded) chain and state store, no training."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cotune.aggregator.api import FOLLOWERS_RETRY_AFTER_SECONDS, LogFollowers, create_app
from cotune.aggregator.enclave import DEV_MODE_WARNING
from cotune.aggregator.service import Aggregator, AggregatorConfig
from cotune.aggregator.state import Stage
from cotune.chain.connection import Chain, connect
from cotune.chain.deployment import Contracts, Deployment, deploy_all
from cotune.common.serving import serve_in_background
from cotune.storage.local import LocalStore

SESSION = 7
DECISIONS = [
    {
        "contributor": "0x" + "11" * 20,
        "accepted": True,
        "reason": "accepted",
        "reason_code": 0,
        "score": 0.25,
        "weight": 3,
        "evidence_hash": "0x" + "aa" * 32,
        "evidence": {"contributor": "0x" + "11" * 20, "examples": 3},
    },
    {
        "contributor": "0x" + "22" * 20,
        "accepted": False,
        "reason": "unreadable",
        "reason_code": 5,
        "score": None,
        "weight": 0,
        "evidence_hash": "0x" + "bb" * 32,
        "evidence": {"contributor": "0x" + "22" * 20, "error": "bad tag"},
    },
]
RESULT = {
    "decisions": DECISIONS,
    "eval": {"base": 2.5, "joint": 1.75},
    "model_cid": "cd" * 32,
    "manifest_cid": "ef" * 32,
    "sealed_keys": ["00" * 40],
}


class Setup:
    """One embedded chain and deployment, and a fresh aggregator over it."""

    def __init__(self, chain: Chain, deployment: Deployment, tmp_path: Path) -> None:
        self.chain = chain
        self.deployment = deployment
        self.operator: LocalAccount = chain.dev_accounts[0]
        self.authority: LocalAccount = chain.dev_accounts[1]
        self.aggregator = Aggregator(
            chain,
            deployment,
            LocalStore(tmp_path / "store"),
            AggregatorConfig(tmp_path / "agg", operator_secret="x"),
        )
        self.app: FastAPI = create_app(self.aggregator)

    def register(self) -> int:
        return self.aggregator.register(self.authority, self.operator)


@pytest.fixture(scope="module")
def deployed() -> tuple[Chain, Deployment]:
    """Shared by the module: every test registers (at most) its own enclave."""
    chain = connect("embedded")
    operator, authority = chain.dev_accounts[:2]
    return chain, deploy_all(chain, operator, dev_authority=authority.address)


@pytest.fixture
def setup(deployed: tuple[Chain, Deployment], tmp_path: Path) -> Setup:
    return Setup(*deployed, tmp_path)


@pytest.fixture
def client(setup: Setup) -> Iterator[TestClient]:
    with TestClient(setup.app) as client:
        yield client


def finished_session(setup: Setup, lines: int = 3) -> None:
    state = setup.aggregator.state
    state.enqueue(SESSION)
    for i in range(lines):
        state.log(SESSION, f"line {i}")
    state.advance(SESSION, Stage.UPLOADED, RESULT)
    state.advance(SESSION, Stage.DONE)


def parse_events(text: str) -> list[tuple[int, dict[str, Any]]]:
    """``(id, data)`` for every event in an SSE body (comments skipped)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            events.append((int(fields["id"]), json.loads(fields["data"])))
    return events


def test_health_before_and_after_registration(setup: Setup, client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["ok"] is True
    assert body["chain_id"] == setup.chain.chain_id
    assert body["block"] == setup.chain.block_number()
    assert body["enclave_registered"] is False
    assert body["dev_mode"] is True
    assert body["warning"] == DEV_MODE_WARNING
    setup.register()
    assert client.get("/health").json()["enclave_registered"] is True


def test_limits_show_the_operators_caps(setup: Setup, client: TestClient) -> None:
    body = client.get("/limits").json()
    assert body == setup.aggregator.config.limits.to_dict()
    assert body["max_contributors"] > 0 and body["max_session_seconds"] == 6 * 3600


def test_enclave_unregistered(setup: Setup, client: TestClient) -> None:
    body = client.get("/enclave").json()
    assert body["enclave_id"] is None
    assert body["record"] is None
    assert body["signer"] == setup.aggregator.keys.public.signer
    assert body["warning"] == DEV_MODE_WARNING
    assert body["verification"]["valid"] is False


def test_enclave_valid_then_revoked(setup: Setup, client: TestClient) -> None:
    enclave_id = setup.register()
    body = client.get("/enclave").json()
    public = setup.aggregator.keys.public
    assert body["enclave_id"] == enclave_id
    assert body["signer"] == public.signer
    assert body["hpke_public_key"] == public.hpke_public_key.to_hex()
    assert body["measurement"] == "0x" + setup.aggregator.measurement.hex()
    assert body["attestation"] == {"kind": "dev", "hardware_guarantee": False}
    assert body["warning"] == DEV_MODE_WARNING
    record = setup.aggregator.contracts.registry.get(enclave_id)
    assert body["record"] == {
        "verifier": setup.deployment.dev_verifier,
        "revoked": False,
        "registered_at": record.registered_at,
        "evidence": "0x" + record.evidence.hex(),
    }
    assert body["verification"] == {"valid": True, "error": None}
    assert "secret" not in json.dumps(body).lower()

    Contracts.at(setup.chain, setup.deployment, setup.operator).registry.revoke(enclave_id)
    body = client.get("/enclave").json()
    assert body["record"]["revoked"] is True
    assert body["verification"]["valid"] is False
    assert "revoked" in body["verification"]["error"]
    assert body["warning"] == DEV_MODE_WARNING


def test_sessions_list_and_detail(setup: Setup, client: TestClient) -> None:
    assert client.get("/sessions").json() == []
    finished_session(setup)
    setup.aggregator.state.enqueue(8)
    listed = client.get("/sessions").json()
    assert [s["session_id"] for s in listed] == [SESSION, 8]
    assert [s["stage"] for s in listed] == ["done", "queued"]
    assert set(listed[0]) == {
        "session_id",
        "stage",
        "timestamps",
        "created_at",
        "updated_at",
        "attempts",
        "error",
    }
    assert set(listed[0]["timestamps"]) == {"queued", "uploaded", "done"}
    detail = client.get(f"/sessions/{SESSION}").json()
    record = setup.aggregator.state.get(SESSION)
    assert record is not None
    assert detail == record.to_dict()
    assert detail["result"]["model_cid"] == RESULT["model_cid"]


def test_report(setup: Setup, client: TestClient) -> None:
    finished_session(setup)
    body = client.get(f"/sessions/{SESSION}/report").json()
    assert body["decisions"] == DECISIONS
    assert body["eval"] == {"base": 2.5, "joint": 1.75}
    assert body["model_cid"] == RESULT["model_cid"]
    assert body["manifest_cid"] == RESULT["manifest_cid"]
    assert body["stage"] == "done"
    assert "sealed_keys" not in body


def test_not_found(setup: Setup, client: TestClient) -> None:
    for path in ("/sessions/99", "/sessions/99/report", "/sessions/99/logs"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "99" in response.json()["detail"]
    setup.aggregator.state.enqueue(SESSION)
    response = client.get(f"/sessions/{SESSION}/report")
    assert response.status_code == 404
    assert "no gate report" in response.json()["detail"]


def test_logs_sse_testclient(setup: Setup, client: TestClient) -> None:
    finished_session(setup)
    ids = [line.line_id for line in setup.aggregator.state.logs(SESSION)]
    response = client.get(f"/sessions/{SESSION}/logs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith(f"id: {ids[0]}\ndata: ")
    events = parse_events(response.text)
    assert [i for i, _ in events] == ids
    assert [d["message"] for _, d in events] == ["line 0", "line 1", "line 2"]
    assert all(isinstance(d["at"], float) for _, d in events)

    resumed = client.get(f"/sessions/{SESSION}/logs", headers={"Last-Event-ID": str(ids[0])})
    assert [i for i, _ in parse_events(resumed.text)] == ids[1:]
    after = client.get(f"/sessions/{SESSION}/logs", params={"after": ids[1]})
    assert [i for i, _ in parse_events(after.text)] == ids[2:]
    bad = client.get(f"/sessions/{SESSION}/logs", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400


def test_logs_no_follow_on_running_session(setup: Setup, client: TestClient) -> None:
    state = setup.aggregator.state
    state.enqueue(SESSION)
    state.log(SESSION, "started")
    response = client.get(f"/sessions/{SESSION}/logs", params={"follow": "false"})
    assert [d["message"] for _, d in parse_events(response.text)] == ["started"]


@pytest.fixture
def server(setup: Setup) -> Iterator[str]:
    running = serve_in_background(setup.app)
    try:
        yield f"http://127.0.0.1:{running.port}"
    finally:
        running.stop()
        assert not running.thread.is_alive()


def read_stream(url: str, headers: dict[str, str] | None = None) -> list[tuple[int, Any]]:
    with (
        httpx.Client(timeout=10) as http,
        http.stream("GET", url, headers=headers or {}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_events("".join(response.iter_text()))


def test_logs_sse_over_http_follows_a_live_session(setup: Setup, server: str) -> None:
    state = setup.aggregator.state
    state.enqueue(SESSION)
    first = state.log(SESSION, "quorum reached")
    url = f"{server}/sessions/{SESSION}/logs"
    received: list[tuple[int, Any]] = []
    seen_first = threading.Event()

    def reader() -> None:
        with (
            httpx.Client(timeout=10) as http,
            http.stream("GET", url) as response,
        ):
            assert response.status_code == 200
            buffer = ""
            for chunk in response.iter_text():
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                for block in blocks:
                    received.extend(parse_events(block + "\n\n"))
                    seen_first.set()

    thread = threading.Thread(target=reader)
    thread.start()
    assert seen_first.wait(10)
    # Lines written while the client listens arrive on the open stream; then it ends.
    more = [state.log(SESSION, f"train: step {i}/2") for i in (1, 2)]
    state.advance(SESSION, Stage.UPLOADED, RESULT)
    state.advance(SESSION, Stage.DONE)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [i for i, _ in received] == [first.line_id] + [m.line_id for m in more]
    assert [d["message"] for _, d in received] == [
        "quorum reached",
        "train: step 1/2",
        "train: step 2/2",
    ]

    # Resume: Last-Event-ID, and the after query parameter.
    resumed = read_stream(url, {"Last-Event-ID": str(first.line_id)})
    assert [i for i, _ in resumed] == [m.line_id for m in more]
    assert [i for i, _ in read_stream(f"{url}?after={more[0].line_id}")] == [more[1].line_id]
    assert read_stream(f"{url}?after={more[1].line_id}") == []


# --- ids out of the store's range -----------------------------------------------------------


def test_ids_beyond_the_store_are_refused_not_500(setup: Setup, client: TestClient) -> None:
    finished_session(setup)
    huge = str(10**30)
    for path in (f"/sessions/{huge}", f"/sessions/{huge}/report", f"/sessions/{huge}/logs"):
        assert client.get(path).status_code == 422, path
    logs = f"/sessions/{SESSION}/logs"
    assert client.get(logs, params={"after": huge}).status_code == 422
    for header in ("9" * 30, "9" * 5000, str(2**63), "0x10", "+5", "1_0", "-1"):
        answer = client.get(logs, headers={"Last-Event-ID": header})
        assert answer.status_code == 400, header[:30]
        assert "Last-Event-ID must be a log line id" in answer.json()["detail"]
    assert client.get(logs, headers={"Last-Event-ID": str(2**63 - 1)}).text == ""


# --- log followers: caps, slots freed on disconnect, idle followers are cheap ---------------


class Follower(threading.Thread):
    """Follows a session's log over HTTP in its own thread, recording every message."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.status: int | None = None
        self.messages: list[str] = []
        self._seen = threading.Condition()

    def run(self) -> None:
        with httpx.Client(timeout=30) as http, http.stream("GET", self.url) as response:
            with self._seen:
                self.status = response.status_code
                self._seen.notify_all()
            buffer = ""
            for chunk in response.iter_text():
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                for _, data in parse_events("\n\n".join(blocks) + "\n\n"):
                    with self._seen:
                        self.messages.append(data["message"])
                        self._seen.notify_all()

    def wait_for(self, message: str, timeout: float = 15) -> bool:
        with self._seen:
            return self._seen.wait_for(lambda: message in self.messages, timeout)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    running = serve_in_background(app)
    try:
        yield f"http://127.0.0.1:{running.port}"
    finally:
        running.stop()
        assert not running.thread.is_alive()


def test_followers_per_client_are_capped_and_freed_on_disconnect(setup: Setup) -> None:
    state = setup.aggregator.state
    state.enqueue(SESSION)
    state.log(SESSION, "started")
    app = create_app(setup.aggregator, max_followers_per_client=2, max_followers=10)
    followers: LogFollowers = app.state.log_followers
    with serving(app) as base, httpx.Client(timeout=10) as http:
        url = f"{base}/sessions/{SESSION}/logs"
        with http.stream("GET", url) as first, http.stream("GET", url) as second:
            assert first.status_code == second.status_code == 200
            assert followers.counts().total == 2
            for params in ({}, {"follow": "false"}):  # every open stream takes a slot
                refused = http.get(url, params=params)
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == str(FOLLOWERS_RETRY_AFTER_SECONDS)
                assert "already follows 2 log streams" in refused.json()["detail"]
            # The streams that got in still follow the session.
            state.log(SESSION, "still here")
            lines = first.iter_lines()
            assert any("still here" in line for line in lines)
        # Both clients hung up mid-stream: their slots come back.
        assert followers.wait_for(lambda counts: counts.total == 0, timeout=10)
        with http.stream("GET", url) as again:
            assert again.status_code == 200
    assert followers.wait_for(lambda counts: counts.total == 0, timeout=10)


def test_followers_in_all_are_capped(setup: Setup) -> None:
    state = setup.aggregator.state
    state.enqueue(SESSION)
    app = create_app(setup.aggregator, max_followers_per_client=5, max_followers=2)
    with serving(app) as base, httpx.Client(timeout=10) as http:
        url = f"{base}/sessions/{SESSION}/logs"
        with http.stream("GET", url) as first, http.stream("GET", url) as second:
            assert first.status_code == second.status_code == 200
            refused = http.get(url)
            assert refused.status_code == 429
            assert "already serves 2 log streams" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) > 0
    with pytest.raises(ValueError, match="at least 1"):
        create_app(setup.aggregator, max_followers=0)


def test_idle_followers_do_not_poll_the_store_and_wake_on_a_line(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = setup.aggregator.state
    state.enqueue(SESSION)
    state.log(SESSION, "started")
    reads = {"n": 0}
    for name in ("get", "logs"):
        original = getattr(state, name)

        def counted(*args: Any, _original: Any = original) -> Any:
            reads["n"] += 1
            return _original(*args)

        monkeypatch.setattr(state, name, counted)
    app = create_app(setup.aggregator, max_followers_per_client=16)
    with serving(app) as base:
        crowd = [Follower(f"{base}/sessions/{SESSION}/logs") for _ in range(16)]
        for follower in crowd:
            follower.start()
        assert all(f.wait_for("started") for f in crowd)
        before = reads["n"]
        # Measuring idleness takes time, not an event: one second of 16 idle followers.
        # Polling each every 0.2 s would read the store 160 times; one watcher, backing
        # off, reads it about 8 times (a bound far from both, for a loaded machine).
        threading.Event().wait(1.0)
        assert reads["n"] - before <= 40, reads["n"] - before
        state.log(SESSION, "a line for everyone")
        assert all(f.wait_for("a line for everyone") for f in crowd)
        state.advance(SESSION, Stage.UPLOADED, RESULT)
        state.advance(SESSION, Stage.DONE)
        for follower in crowd:
            follower.join(timeout=15)
            assert not follower.is_alive() and follower.status == 200
    followers: LogFollowers = app.state.log_followers
    assert followers.counts().total == 0
