"""The enclave's plaintext workspace: private, one root per data dir, swept at start."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from cotune.aggregator.workspace import plaintext_root, plaintext_workspace, sweep


def test_a_root_is_private_and_per_data_dir(tmp_path: Path) -> None:
    a, b = plaintext_root(tmp_path / "a"), plaintext_root(tmp_path / "b")
    assert a != b
    assert a == plaintext_root(tmp_path / "a")
    assert stat.S_IMODE(a.stat().st_mode) == 0o700
    with plaintext_workspace(a) as work:
        assert work.parent == a
        assert stat.S_IMODE(work.stat().st_mode) == 0o700
        (work / "adapter.bin").write_bytes(b"plaintext")
    assert list(a.iterdir()) == []


def test_what_a_sigkill_leaves_is_swept_and_only_that(tmp_path: Path) -> None:
    root, other = plaintext_root(tmp_path / "mine"), plaintext_root(tmp_path / "theirs")
    # A real process killed inside its workspace: no finally, no cleanup.
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from cotune.aggregator.workspace import plaintext_workspace\n"
        "with plaintext_workspace(Path(sys.argv[1])) as work:\n"
        "    (work / 'adapter_model.safetensors').write_bytes(b'weights')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(root)], check=False)
    assert done.returncode == -signal.SIGKILL
    left = list(root.iterdir())
    assert len(left) == 1 and (left[0] / "adapter_model.safetensors").exists()
    (other / "keep").write_bytes(b"another aggregator's")
    (root / "stray-file").write_bytes(b"x")
    assert sweep(root) == 2
    assert list(root.iterdir()) == []
    assert (other / "keep").exists()


def test_the_service_sweeps_its_root_when_it_starts(tmp_path: Path) -> None:
    from cotune.aggregator.service import Aggregator, AggregatorConfig
    from cotune.chain.connection import connect
    from cotune.chain.deployment import deploy_all
    from cotune.storage.local import LocalStore

    data_dir = tmp_path / "agg"
    leftover = plaintext_root(data_dir) / "run-killed"
    leftover.mkdir()
    (leftover / "adapter_model.safetensors").write_bytes(os.urandom(64))
    chain = connect("embedded")
    deployment = deploy_all(chain, chain.dev_accounts[0])
    service = Aggregator(
        chain, deployment, LocalStore(tmp_path / "store"), AggregatorConfig(data_dir, "secret")
    )
    assert service.swept_on_start == 1
    assert not leftover.exists()
