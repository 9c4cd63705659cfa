"""Starts a private mariadbd: its own data directory, socket and TCP port on 127.0.0.1, no
systemd and no system configuration. Debian's mariadb-server (and python3-pymysql, for the
tests that run on Debian's Python) are installed first when missing, as the lab installs its
packages. Anything that goes wrong raises with the reason and the end of the server's log."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostsnap_lab.packages import ensure_installed

PACKAGES = ("mariadb-server", "python3-pymysql")
USER = "hostsnap"
PASSWORD = "hostsnap"
START_TIMEOUT = 60.0
# A small server: the tests hold a few kB; 8 MB of redo log instead of 96 MB per data directory.
SMALL = ("--innodb-buffer-pool-size=64M", "--innodb-log-file-size=8M")
# Set by a test run that shares its server with a run it starts (Debian's Python).
REUSE_PORT_ENV = "HOSTSNAP_TEST_MARIADB_PORT"


class MariaDBError(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class MariaDB:
    port: int
    process: subprocess.Popen[bytes] | None = None  # None when another run owns the server
    base: Path | None = None

    def admin(self, database: str | None = None) -> Any:
        import pymysql  # after ensure_installed, which may have just installed it

        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=PASSWORD,
            database=database,
            autocommit=True,
            connect_timeout=5,
        )

    def url(self, database: str) -> str:
        return f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.base is not None:
            shutil.rmtree(self.base / "data", ignore_errors=True)  # the log stays


def _as_root() -> list[str]:
    # mariadbd refuses to run as root unless told to.
    return ["--user=root"] if os.geteuid() == 0 else []


def _run(argv: list[str], log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise MariaDBError(f"{argv[0]} exited {done.returncode}:\n{_tail(log)}")


def start(base: Path) -> MariaDB:
    """A running server with a database user `hostsnap` that may create databases; reuses
    the server of the run that set HOSTSNAP_TEST_MARIADB_PORT."""
    if os.environ.get(REUSE_PORT_ENV):
        server = MariaDB(port=int(os.environ[REUSE_PORT_ENV]))
        server.admin().close()
        return server
    try:
        ensure_installed(PACKAGES)
    except SystemExit as e:  # not root, or apt-get failed: say so
        raise MariaDBError(f"cannot install {' '.join(PACKAGES)}: {e}") from e
    importlib.invalidate_caches()
    for tool in ("/usr/bin/mariadb-install-db", "/usr/sbin/mariadbd"):
        if not Path(tool).exists():
            raise MariaDBError(f"{tool} not found although mariadb-server is installed")
    data, log = base / "data", base / "mariadb.log"
    base.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "/usr/bin/mariadb-install-db",
            "--no-defaults",
            f"--datadir={data}",
            *_as_root(),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            *SMALL,
        ],
        log,
    )
    init = base / "init.sql"
    init.write_text(
        f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';\n"
        f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1';\n"
    )
    port = _free_port()
    argv = [
        "/usr/sbin/mariadbd",
        "--no-defaults",
        f"--datadir={data}",
        f"--socket={base / 'mariadbd.sock'}",
        f"--pid-file={base / 'mariadbd.pid'}",
        f"--log-error={log}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        "--skip-name-resolve",
        f"--init-file={init}",
        *SMALL,
        "--innodb-flush-log-at-trx-commit=2",
        "--max-connections=200",
    ]
    argv += _as_root()
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    server = MariaDB(port=port, process=process, base=base)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise MariaDBError(f"mariadbd exited {process.returncode}:\n{_tail(log)}")
        try:
            server.admin().close()
            return server
        except Exception as e:  # pymysql's OperationalError while it starts
            if time.monotonic() > deadline:
                server.stop()
                raise MariaDBError(
                    f"mariadbd not answering after {START_TIMEOUT} s ({e}):\n{_tail(log)}"
                ) from e
            time.sleep(0.1)
