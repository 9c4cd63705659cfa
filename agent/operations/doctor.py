"""`hostsnap doctor`: what the operator guide tells technicians to check on a host, each
with ok, warning or failure and what to do."""

from __future__ import annotations

import enum
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from agent.errors import HostsnapError
from agent.hypervisor import domain_xml, qemu_img, time_sync
from agent.hypervisor.ports import CephCluster, GuestAgents, Host
from agent.model import VolumeKind
from agent.operations import rbd_overlay, volumes


class Verdict(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILURE = "failure"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class Adapters:
    """What the checks look at (agent/wiring.py run_doctor gives the real ones)."""

    host: Host
    guest_agents: GuestAgents
    ceph: CephCluster


def run_checks(
    config: AgentConfig,
    adapters: Adapters,
    agent_socket: str,
    audit_log: str,
    agent_answers: Callable[[], str | None],
) -> list[Check]:
    """Reads only: nothing of the agent's state is created or changed."""
    host = adapters.host
    checks = [_libvirt(host, config)]
    if checks[0].verdict == Verdict.OK:
        checks += _guest_agents(host, adapters.guest_agents)
        checks += _pools(host, config)
    checks.append(_rbd_overlays(config))
    checks.append(_time_sync())
    checks.append(_ceph(adapters.ceph, config))
    checks.append(_agent(agent_socket, agent_answers))
    checks.append(
        Check(
            "logs",
            Verdict.OK,
            f"agent: journal (journalctl -u hostsnap-agent), audit {audit_log}; libvirt: "
            "/var/log/libvirt/libvirtd.log; QEMU: /var/log/libvirt/qemu/<domain>.log",
        )
    )
    return checks


def _libvirt(host: Host, config: AgentConfig) -> Check:
    try:
        libvirt_version, qemu_version = host.versions()
    except HostsnapError as e:
        return Check("libvirt", Verdict.FAILURE, f"{e}; start libvirtd (systemctl start libvirtd)")
    return Check(
        "libvirt",
        Verdict.OK,
        f"{config.libvirt_uri}: libvirt {libvirt_version}, QEMU {qemu_version}",
    )


def _guest_agents(host: Host, guest_agents: GuestAgents) -> list[Check]:
    found = []
    for name, _, state in host.list_domains(include_inactive=False):
        if not volumes.is_live(state):
            continue
        try:
            guest_agents(name).ping()
            found.append(Check(f"guest agent {name}", Verdict.OK, "answers guest-ping"))
        except HostsnapError as e:
            found.append(
                Check(
                    f"guest agent {name}",
                    Verdict.WARNING,
                    f"{e}; snapshots of {name} will be crash-consistent: install and start "
                    "qemu-guest-agent in the guest",
                )
            )
    return found


def _pools(host: Host, config: AgentConfig) -> list[Check]:
    needed: dict[str, int] = {}
    for name, _, _ in host.list_domains(include_inactive=True):
        try:
            disks = domain_xml.volumes(name, host.xml(name))
        except HostsnapError:
            continue  # the domain went away meanwhile
        for volume in disks:
            if volume.kind != VolumeKind.FILE or volume.path is None:
                continue
            try:
                size = qemu_img.info(volume.path).virtual_size
            except HostsnapError:
                continue
            directory = str(Path(volume.path).parent)
            needed[directory] = needed.get(directory, 0) + int(size * config.pool_headroom)
    found = []
    for directory, need in sorted(needed.items()):
        free = shutil.disk_usage(directory).free
        verdict = Verdict.OK if free >= need else Verdict.FAILURE
        advice = "" if verdict == Verdict.OK else "; snapshots there will fail (530): free space"
        found.append(
            Check(
                f"pool {directory}",
                verdict,
                f"{free // 2**20} MiB free, headroom {need // 2**20} MiB "
                f"({config.pool_headroom:.0%} of its disks){advice}",
            )
        )
    return found


def _rbd_overlays(config: AgentConfig) -> Check:
    left = rbd_overlay.leftovers(config.rbd_overlay_dir)
    if not left:
        return Check("rbd overlays", Verdict.OK, f"none left in {config.rbd_overlay_dir}")
    return Check(
        "rbd overlays",
        Verdict.WARNING,
        f"{', '.join(str(p) for p in left)}: a short freeze's temporary overlays; a running "
        "RBD disk may still be on one (virsh domblklist). Start the agent (its recovery "
        "commits them back); an overlay no disk uses can be deleted",
    )


def _time_sync() -> Check:
    found = time_sync.probe()
    if found is None:
        return Check(
            "time",
            Verdict.WARNING,
            "no chrony, systemd-timesyncd or ntp found; install chrony so that snapshot times "
            "agree across hosts",
        )
    if found.synchronised:
        return Check("time", Verdict.OK, f"synchronised ({found.tool})")
    return Check(
        "time", Verdict.WARNING, f"{found.tool} reports no synchronisation; check chrony or ntp"
    )


def _ceph(ceph: CephCluster, config: AgentConfig) -> Check:
    conf = config.ceph_conf
    if not os.path.exists(conf):
        return Check("ceph", Verdict.OK, f"no {conf}: this host serves file volumes only")
    try:
        ceph.connect(conf)
    except HostsnapError as e:
        return Check("ceph", Verdict.FAILURE, f"{e}; check the monitors and the keyring in {conf}")
    return Check("ceph", Verdict.OK, f"cluster of {conf} answers")


def _agent(socket: str, agent_answers: Callable[[], str | None]) -> Check:
    problem = agent_answers()
    if problem is None:
        return Check("agent", Verdict.OK, f"answers on {socket}")
    return Check(
        "agent",
        Verdict.WARNING,
        f"does not answer on {socket} ({problem}): start hostsnap-agent (rescue with --direct)",
    )
