"""The agent client and the dispatcher on Debian 12's own python3-grpcio (1.51),
python3-protobuf and python3-sqlalchemy (1.4), with stubs made by Debian's python3-grpc-tools:
their unit tests run again under /usr/bin/python3."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
TESTS = (
    "tests/unit/test_agent_client.py",
    "tests/unit/test_dispatch.py",
    "tests/unit/test_dispatch_failover.py",
)


def test_agent_client_and_dispatch_pass_on_debians_grpc_protobuf_and_sqlalchemy(tmp_path: Path):
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    subprocess.run(
        [SYSTEM_PYTHON, str(REPO / "proto" / "generate_stubs.py"), str(stubs)],
        capture_output=True,
        check=True,
    )
    versions = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import grpc, sqlalchemy; print(grpc.__version__, sqlalchemy.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert versions[0].startswith("1.51.") and versions[1].startswith("1.4.")
    run = subprocess.run(
        [SYSTEM_PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        cwd=REPO,
        env={"PYTHONPATH": f"{stubs}:{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
