"""The host's facts the transport reports (GetHostInfo, ListDomains, the metrics' scrape),
read through the operations from the ports."""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentConfig
from agent.errors import Unavailable
from agent.jobs import Journal
from agent.model import DomainState
from agent.operations import host_info, stats
from agent.operations.services import Services
from tests.unit.fakes import UnusedHost, UnusedRbd


class Host(UnusedHost):
    def versions(self) -> tuple[str, str]:
        return "9.0.0", "7.2.0"

    def list_domains(self, include_inactive: bool) -> list[tuple[str, str, DomainState]]:
        running = [("web", "uuid-web", DomainState.RUNNING)]
        return [*running, ("old", "uuid-old", DomainState.SHUTOFF)] if include_inactive else running


class Rbd(UnusedRbd):
    def client_version(self) -> str:
        return "16.2.11"


class NoLibvirt(UnusedHost):
    def block_counters(self) -> tuple[float, dict[str, dict[str, dict[str, int]]]]:
        raise Unavailable("libvirt is down")


def services(tmp_path: Path, host: UnusedHost) -> Services:
    config = AgentConfig(state_dir=tmp_path, sysfs_root=tmp_path / "sys")
    return Services(config, host, Rbd(), Journal(tmp_path / "journal.db"))


def test_host_info_names_the_versions_of_libvirt_qemu_and_ceph(tmp_path: Path) -> None:
    found = host_info.host_info(services(tmp_path, Host()))
    assert (found.libvirt_version, found.qemu_version) == ("9.0.0", "7.2.0")
    assert found.ceph_client_version == "16.2.11" and found.hostname


def test_domains_are_the_running_ones_unless_the_inactive_are_asked_for(tmp_path: Path) -> None:
    svc = services(tmp_path, Host())
    assert host_info.list_domains(svc, include_inactive=False) == [
        host_info.Domain("web", "uuid-web", DomainState.RUNNING)
    ]
    assert [d.name for d in host_info.list_domains(svc, include_inactive=True)] == ["web", "old"]


def test_a_reading_without_libvirt_says_why_and_still_has_the_host_devices(
    tmp_path: Path,
) -> None:
    now = stats.reading(services(tmp_path, NoLibvirt()))
    assert now.domain_disks == {} and now.domains_unread == "libvirt is down"
    assert now.host_devices, "this machine has block devices"
    assert now.temperatures == []  # no sensors under an empty sysfs
