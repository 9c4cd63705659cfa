"""A hostsnap-agent serving the lab on a unix socket under the lab's state directory."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .lab import Lab
from .run import LabError


@contextlib.contextmanager
def local_agent(lab: Lab) -> Iterator[Path]:
    """Runs the agent for the duration of the block; yields its socket."""
    directory = lab.paths.root / "demo-agent"
    directory.mkdir(exist_ok=True)
    sock = directory / "agent.sock"
    config = directory / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{lab.agent_state}"\nceph_conf = "{lab.ceph_conf}"\n'
        f'[listen]\nunix_socket = "{sock}"\n[audit]\nlog = "{directory / "audit.log"}"\n'
    )
    sock.unlink(missing_ok=True)
    log = (directory / "agent.log").open("wb")
    agent = subprocess.Popen(
        [str(Path(sys.executable).parent / "hostsnap-agent"), "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"hostsnap-agent did not start; see {directory / 'agent.log'}")
            time.sleep(0.1)
        yield sock
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=90)
