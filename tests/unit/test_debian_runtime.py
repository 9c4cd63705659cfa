"""The agent and the CLI run on Debian 12's own python3-grpcio (1.51) and python3-protobuf
(3.21) with stubs made by Debian's python3-grpc-tools: what the distro packages will ship."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


def test_agent_serves_and_cli_answers_on_debians_grpc_and_protobuf(tmp_path: Path):
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    subprocess.run(
        [SYSTEM_PYTHON, str(REPO / "proto" / "generate_stubs.py"), str(stubs)],
        capture_output=True,
        check=True,
    )
    sock = tmp_path / "run" / "agent.sock"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n[listen]\nunix_socket = "{sock}"\n'
        f'[audit]\nlog = "{tmp_path / "audit.log"}"\n'
    )
    env = {"PYTHONPATH": f"{stubs}:{REPO}", "PATH": os.environ["PATH"]}
    agent = subprocess.Popen(
        [SYSTEM_PYTHON, "-m", "agent.main", "--config", str(config), "--log-format", "json"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert agent.poll() is None and time.monotonic() < deadline, agent.stderr
            time.sleep(0.1)
        jobs = subprocess.run(
            [SYSTEM_PYTHON, "-m", "agent.cli", "--socket", str(sock), "--json", "jobs"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert jobs.returncode == 0, jobs.stderr
        assert json.loads(jobs.stdout) == []
        version = subprocess.run(
            [
                SYSTEM_PYTHON,
                "-c",
                "import grpc, google.protobuf as p; print(grpc.__version__, p.__version__)",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert version[0].startswith("1.51") and version[1].startswith(("3.21", "4.21"))
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0
    logged = [json.loads(line) for line in stderr.splitlines()]
    assert any("serving on" in entry["message"] for entry in logged)
    assert not sock.exists()
