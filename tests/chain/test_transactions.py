"""Sending: concurrent senders from one account, transient RPC failures, no-cost reverts."""

import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from chain_fixtures import Enclave, session_params

from cotune.chain import Chain, ChainError, Contracts, RevertError, connect, deploy_all
from cotune.chain.devnet import free_port


def test_concurrent_senders_share_one_nonce_sequence(
    chain: Chain, contracts: Contracts, enclave: Enclave
) -> None:
    params = session_params(chain, enclave)
    start = chain.w3.eth.get_transaction_count(contracts.coordinator.account_address)
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(lambda _i: contracts.coordinator.create_session(params), range(12)))
    assert sorted(ids) == list(range(min(ids), min(ids) + 12))
    assert chain.w3.eth.get_transaction_count(contracts.coordinator.account_address) == start + 12


def test_revert_at_estimation_sends_nothing(
    chain: Chain, contracts: Contracts, enclave: Enclave
) -> None:
    owner = contracts.coordinator.account_address
    nonce, balance = chain.w3.eth.get_transaction_count(owner), chain.balance(owner)
    with pytest.raises(RevertError) as info:
        contracts.coordinator.create_session(
            session_params(chain, enclave, quorum=5, max_contributors=2), reward_pool=10**18
        )
    assert info.value.error == "InvalidQuorum"
    assert "quorum 5 must be between 1 and max contributors 2" in str(info.value)
    assert chain.w3.eth.get_transaction_count(owner) == nonce
    assert chain.balance(owner) == balance


class _FlakyProxy(BaseHTTPRequestHandler):
    """Forwards JSON-RPC to ``upstream`` but fails every other request with a 503."""

    upstream = ""
    counter = 0
    failures = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).counter += 1
            fail = self.counter % 2 == 1
            if fail:
                type(self).failures += 1
        if fail:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        request = urllib.request.Request(  # noqa: S310 (loopback URL from the fixture)
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as response:  # noqa: S310
            payload = response.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep test output quiet."""


@pytest.fixture
def flaky_url(anvil_url: str) -> Iterator[str]:
    _FlakyProxy.upstream = anvil_url
    _FlakyProxy.failures = 0
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _FlakyProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_transient_rpc_errors_are_retried(flaky_url: str) -> None:
    chain = connect(flaky_url, backoff=0.01)
    deployment = deploy_all(chain, chain.dev_accounts[0])
    deployment.check(chain)
    assert _FlakyProxy.failures > 10  # half of all requests failed, and the deploy still worked


def test_unreachable_and_unsupported_urls() -> None:
    with pytest.raises(ChainError, match="cannot reach"):
        connect(f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=1)
    with pytest.raises(ChainError, match="unsupported chain URL"):
        connect("ws://localhost:8546")
