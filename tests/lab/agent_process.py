"""A real hostsnap-agent process for the lab tests: certificates made for the test (a CA,
the agent's server certificate, an operator's, a viewer's, and a stranger's from another CA)
and a configuration that serves the lab."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from hostsnap.agent.v1 import agent_pb2_grpc
from hostsnap_lab.lab import Lab

AGENT = str(Path(sys.executable).parent / "hostsnap-agent")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )
    return key, cert


def make_cert(directory: Path, ca: tuple[Path, Path], cn: str, san: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{cn}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{cn}.ext"
    ext.write_text(f"subjectAltName={san}\n")
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={cn}",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[1]),
        "-CAkey",
        str(ca[0]),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return key, cert


def hwmon_fixture(root: Path) -> Path:
    """A sysfs tree in the kernel's own format with one hwmon chip at 47 °C."""
    chip = root / "class" / "hwmon" / "hwmon0"
    chip.mkdir(parents=True)
    for name, value in (
        ("name", "coretemp"),
        ("temp1_input", "47000"),
        ("temp1_label", "Package id 0"),
        ("temp1_max", "84000"),
        ("temp1_crit", "100000"),
    ):
        (chip / name).write_text(value + "\n")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AgentProcess:
    directory: Path
    process: subprocess.Popen[bytes]
    socket: Path
    endpoint: str
    ca: Path
    audit_log: Path
    metrics: str

    def credentials(self, who: str) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=(self.directory / f"{who}.key").read_bytes(),
            certificate_chain=(self.directory / f"{who}.crt").read_bytes(),
        )

    def stub(self, who: str) -> agent_pb2_grpc.AgentServiceStub:
        """A stub over TCP with `who`'s certificate (ctl-operator, ctl-viewer, stranger)."""
        return agent_pb2_grpc.AgentServiceStub(
            grpc.secure_channel(self.endpoint, self.credentials(who))
        )

    def local_stub(self) -> agent_pb2_grpc.AgentServiceStub:
        return agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(f"unix:{self.socket}"))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)


def start_agent(
    lab: Lab, directory: Path, fault: str = "", state_dir: Path | None = None
) -> AgentProcess:
    """`fault`: the agent's HOSTSNAP_FAULT (agent/faults.py), none by default. `state_dir`: a
    journal of its own (another host's agent), else the lab's."""
    ca = make_ca(directory, "test-ca")
    make_cert(directory, ca, "agent", "IP:127.0.0.1,DNS:localhost")
    make_cert(directory, ca, "ctl-operator", "DNS:ctl-operator")
    make_cert(directory, ca, "ctl-viewer", "DNS:ctl-viewer")
    make_cert(directory, make_ca(directory, "stranger-ca"), "stranger", "DNS:ctl-operator")
    endpoint = f"127.0.0.1:{free_port()}"
    metrics = f"127.0.0.1:{free_port()}"
    sock = directory / "run" / "agent.sock"
    audit = directory / "audit.log"
    config = directory / "agent.toml"
    config.write_text(
        f"""[agent]
state_dir = "{state_dir or lab.agent_state}"
ceph_conf = "{lab.ceph_conf}"
stop_timeout = 3.0
backup_targets_dir = "{directory / "backup-targets"}"
sysfs_root = "{hwmon_fixture(directory / "sysfs")}"

[listen]
unix_socket = "{sock}"
tcp = "{endpoint}"
metrics = "{metrics}"

[tls]
cert = "{directory / "agent.crt"}"
key = "{directory / "agent.key"}"
client_ca = "{ca[1]}"

[roles]
ctl-operator = "operator"
ctl-viewer = "viewer"

[audit]
log = "{audit}"

[admission]
temperature_ceiling = 85.0
wait_timeout = 3.0
poll_interval = 0.5
"""
    )
    log = (directory / "agent.log").open("wb")
    process = subprocess.Popen(
        [AGENT, "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HOSTSNAP_FAULT": fault},
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert process.poll() is None, (directory / "agent.log").read_text()
        assert time.monotonic() < deadline, "hostsnap-agent did not open its socket"
        time.sleep(0.1)
    return AgentProcess(directory, process, sock, endpoint, ca[1], audit, metrics)
