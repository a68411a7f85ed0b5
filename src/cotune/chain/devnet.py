"""A local anvil devnet: started detached on loopback, with state that survives restarts.

``$COTUNE_HOME/devnet`` holds ``state.json`` (anvil's dumped chain state), ``anvil.pid``,
``anvil.log`` and ``deployment.json``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cotune.chain.connection import Chain, connect
from cotune.chain.deployment import Deployment, deploy_all
from cotune.chain.errors import ChainError, DeploymentError

DEFAULT_PORT = 8545
ANVIL_CHAIN_ID = 31337
STATE_DUMP_INTERVAL_S = 2
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]


def find_anvil() -> str:
    """The anvil binary: ``$COTUNE_ANVIL``, then ``anvil`` on PATH, then ``node_modules``."""
    explicit = os.environ.get("COTUNE_ANVIL")
    if explicit:
        return explicit
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    for root in (Path.cwd(), _PACKAGE_ROOT):
        found = sorted((root / "node_modules/@foundry-rs").glob("anvil-*/bin/anvil"))
        if found:
            return str(found[0])
    raise ChainError(
        "anvil not found: run `make node` (npm ci), put anvil on PATH or set COTUNE_ANVIL"
    )


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_anvil(
    port: int,
    *,
    state_file: Path | None = None,
    log_file: Path | None = None,
    detach: bool = False,
) -> subprocess.Popen[bytes]:
    """Start anvil on ``127.0.0.1:port`` and wait until it answers JSON-RPC."""
    args = [find_anvil(), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--chain-id", str(ANVIL_CHAIN_ID), "--silent"]
    if state_file is not None:
        args += ["--state", str(state_file), "--state-interval", str(STATE_DUMP_INTERVAL_S)]
    log = log_file.open("ab") if log_file is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=detach
        )
    finally:
        if log_file is not None and not isinstance(log, int):
            log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChainError(f"anvil exited with status {proc.returncode} (see {log_file})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise ChainError(f"anvil did not listen on port {port} within 30 s")


@dataclass(frozen=True)
class DevnetStatus:
    """What ``cotune devnet status`` reports."""

    running: bool
    url: str
    pid: int | None
    home: Path
    block_number: int | None = None
    deployment: Deployment | None = None


class Devnet:
    """A devnet rooted at ``home``; at most one anvil per home."""

    def __init__(self, home: Path, port: int = DEFAULT_PORT) -> None:
        self.home = home
        self.port = port

    @property
    def url(self) -> str:
        """The JSON-RPC URL."""
        return f"http://127.0.0.1:{self._recorded_port() or self.port}"

    @property
    def deployment_path(self) -> Path:
        """Where the deployment record is written."""
        return self.home / "deployment.json"

    def up(self) -> tuple[DevnetStatus, bool]:
        """Start anvil and deploy, each unless done; return (status, whether it deployed)."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self._pid() is None:
            proc = start_anvil(
                self.port,
                state_file=self.home / "state.json",
                log_file=self.home / "anvil.log",
                detach=True,
            )
            (self.home / "anvil.pid").write_text(f"{proc.pid} {self.port}\n")
        chain = connect(self.url)
        deployed_now = False
        try:
            Deployment.load(self.deployment_path).check(chain)
        except DeploymentError:
            deploy_all(chain, chain.dev_accounts[0]).save(self.deployment_path)
            deployed_now = True
        return self.status(), deployed_now

    def down(self) -> bool:
        """Stop anvil (it dumps its state on the way out); return whether one was running."""
        pid = self._pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        (self.home / "anvil.pid").unlink(missing_ok=True)
        return True

    def status(self) -> DevnetStatus:
        """Whether anvil runs, its block height and the deployment record."""
        pid = self._pid()
        deployment = None
        with contextlib.suppress(DeploymentError):
            deployment = Deployment.load(self.deployment_path)
        if pid is None:
            return DevnetStatus(False, self.url, None, self.home, None, deployment)
        chain = connect(self.url)
        return DevnetStatus(True, self.url, pid, self.home, chain.block_number(), deployment)

    def connect(self) -> Chain:
        """A connection to the running devnet."""
        if self._pid() is None:
            raise ChainError(f"no devnet is running in {self.home}: run `cotune devnet up`")
        return connect(self.url)

    def _pid(self) -> int | None:
        """The recorded anvil pid if that process is alive and is anvil."""
        record = self._record()
        if record is None:
            return None
        pid = record[0]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"anvil" in cmdline and _alive(pid) else None

    def _recorded_port(self) -> int | None:
        record = self._record()
        return record[1] if record is not None else None

    def _record(self) -> tuple[int, int] | None:
        try:
            pid_text, port_text = (self.home / "anvil.pid").read_text().split()
            return int(pid_text), int(port_text)
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    return True
