"""The store on what Debian 12 ships (python3-sqlalchemy 1.4, python3-alembic 1.8,
python3-pymysql 1.0), as the controller's DEB will run it: the store's tests (tests/unit/store
on SQLite, this directory on MariaDB, failover included) again under /usr/bin/python3 without
the virtual environment, on this session's MariaDB server. Everywhere else they run on the
virtual environment's SQLAlchemy 2."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hostsnap_lab.packages import ensure_installed
from tests.mariadb.server import REUSE_PORT_ENV

REPO = Path(__file__).resolve().parents[3]
SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGES = ("python3-sqlalchemy", "python3-alembic", "python3-pymysql", "python3-pytest")


def test_the_store_suite_passes_on_debians_sqlalchemy_alembic_and_pymysql(mariadb, tmp_path):
    ensure_installed(DEBIAN_PACKAGES)
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
        REUSE_PORT_ENV: str(mariadb.port),
    }
    versions = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import sqlalchemy, alembic, pymysql; "
            "print(sqlalchemy.__version__, alembic.__version__, pymysql.__version__)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert versions[0].startswith("1.4.") and versions[1].startswith("1.8."), versions

    here = Path(__file__).relative_to(REPO)
    suite = subprocess.run(
        [
            SYSTEM_PYTHON,
            *("-m", "pytest", "-q", "-p", "no:cacheprovider"),
            f"--basetemp={tmp_path / 'run'}",
            f"--ignore={here}",
            # The whole controller with the lab's agent: it runs in the virtual environment.
            f"--ignore={here.parent / 'test_controller_failover.py'}",
            "tests/unit/store",
            str(here.parent),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    report = f"on Debian's {versions}:\n{suite.stdout[-6000:]}{suite.stderr}"
    assert suite.returncode == 0, report
    summary = suite.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, report
