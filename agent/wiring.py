"""Builds the real adapters and the Services the operations work with: for the agent's
service, `hostsnap --direct`, `hostsnap doctor` and the lab tests. The one place that picks
the adapters."""

from __future__ import annotations

from collections.abc import Callable

from agent.admission import Admission, AdmissionConfig
from agent.backups.targets import Target
from agent.config import AgentConfig
from agent.hypervisor.ceph_rbd import CephRbd
from agent.hypervisor.guest_agent import GuestAgent
from agent.hypervisor.image_io import ImageIO
from agent.hypervisor.libvirt_host import LibvirtHost
from agent.hypervisor.ports import GuestAgents
from agent.hypervisor.restic import ResticRepository
from agent.jobs import Journal
from agent.operations import doctor, stats
from agent.operations.services import Services


def guest_agents(host: LibvirtHost, timeout: int) -> GuestAgents:
    """A domain's guest agent, on a connection of its own (a guest that does not answer
    holds only that one)."""

    def guest_agent(domain: str) -> GuestAgent:
        return GuestAgent(host.domain_on_own_connection(domain), timeout)

    return guest_agent


def open_services(config: AgentConfig, admission: AdmissionConfig | None = None) -> Services:
    """The Services over this host's libvirt and Ceph, with the journal in the state
    directory (made when missing) and admission judging by the host's sensors and load."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    host = LibvirtHost(config.libvirt_uri)
    rbd = CephRbd(config.ceph_conf)
    return Services(
        config=config,
        host=host,
        rbd=rbd,
        images=ImageIO(rbd),
        repository=lambda target: repository(config, target),
        journal=Journal(config.journal_path),
        guest_agents=guest_agents(host, config.guest_agent_timeout),
        admission=Admission(
            admission or AdmissionConfig(),
            hottest=lambda: stats.hottest(config.sysfs_root),
            pool_iops=stats.PoolLoad(host),
        ),
    )


def repository(config: AgentConfig, target: Target) -> ResticRepository:
    return ResticRepository(
        target.repository,
        str(target.key_file),
        env=target.credentials(),
        limit_upload_kib=target.limit_upload_kib,
        cache_dir=str(config.restic_cache),
    )


def run_doctor(
    config: AgentConfig,
    agent_socket: str,
    audit_log: str,
    agent_answers: Callable[[], str | None],
) -> list[doctor.Check]:
    """`hostsnap doctor`'s checks over this host's libvirt and Ceph."""
    host, rbd = LibvirtHost(config.libvirt_uri), CephRbd(config.ceph_conf)
    adapters = doctor.Adapters(host, guest_agents(host, config.guest_agent_timeout), rbd)
    try:
        return doctor.run_checks(config, adapters, agent_socket, audit_log, agent_answers)
    finally:
        rbd.close()
