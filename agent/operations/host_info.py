"""What the host runs: its name, the versions of libvirt, QEMU and the Ceph client, and its
domains."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from agent.model import DomainState
from agent.operations.services import Services


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    libvirt_version: str
    qemu_version: str
    ceph_client_version: str


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    state: DomainState


def host_info(svc: Services) -> HostInfo:
    libvirt_version, qemu_version = svc.host.versions()
    return HostInfo(
        hostname=socket.gethostname(),
        libvirt_version=libvirt_version,
        qemu_version=qemu_version,
        ceph_client_version=svc.rbd.client_version(),
    )


def list_domains(svc: Services, include_inactive: bool) -> list[Domain]:
    """The running domains, and the defined ones that do not run with `include_inactive`."""
    return [Domain(*found) for found in svc.host.list_domains(include_inactive)]
