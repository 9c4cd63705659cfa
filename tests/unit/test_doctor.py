"""`hostsnap doctor`'s checks over fake ports: what each reports, and that a libvirt that
does not answer skips the checks that need it."""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentConfig
from agent.errors import NotFound, Unavailable
from agent.hypervisor.ports import Guest
from agent.model import DomainState
from agent.operations.doctor import Adapters, Check, Verdict, run_checks
from tests.unit.fakes import FakeGuest, UnusedHost


class Host(UnusedHost):
    """Two running domains without disks: "web" with a guest agent, "bare" without one."""

    def versions(self) -> tuple[str, str]:
        return "9.0.0", "7.2.0"

    def list_domains(self, include_inactive: bool) -> list[tuple[str, str, DomainState]]:
        return [("web", "u1", DomainState.RUNNING), ("bare", "u2", DomainState.RUNNING)]

    def xml(self, name: str, *, inactive: bool = False) -> str:
        return f"<domain><name>{name}</name><devices/></domain>"


class NoLibvirt(UnusedHost):
    def versions(self) -> tuple[str, str]:
        raise Unavailable("cannot connect to qemu:///system")


def guest_agents(domain: str) -> Guest:
    if domain != "web":
        raise Unavailable(f"guest agent of {domain} does not answer")
    return FakeGuest()


class Ceph:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def connect(self, conf: str) -> None:
        self.asked.append(conf)


def checks(tmp_path: Path, host: UnusedHost, ceph: Ceph, ceph_conf: str) -> dict[str, Check]:
    config = AgentConfig(state_dir=tmp_path, ceph_conf=ceph_conf)
    found = run_checks(
        config,
        Adapters(host, guest_agents, ceph),
        "/run/hostsnap/agent.sock",
        "audit",
        lambda: None,
    )
    return {c.name: c for c in found}


def test_each_check_reports_and_a_guest_without_agent_is_a_warning(tmp_path: Path) -> None:
    conf = tmp_path / "ceph.conf"
    conf.write_text("")
    ceph = Ceph()
    found = checks(tmp_path, Host(), ceph, str(conf))
    assert found["libvirt"].verdict == Verdict.OK and "libvirt 9.0.0" in found["libvirt"].detail
    assert found["guest agent web"].verdict == Verdict.OK
    bare = found["guest agent bare"]
    assert bare.verdict == Verdict.WARNING and "crash-consistent" in bare.detail
    assert found["ceph"].verdict == Verdict.OK and ceph.asked == [str(conf)]
    assert found["rbd overlays"].verdict == Verdict.OK
    assert {"time", "agent", "logs"} <= set(found)


def test_without_libvirt_the_checks_that_need_it_are_skipped(tmp_path: Path) -> None:
    ceph = Ceph()
    found = checks(tmp_path, NoLibvirt(), ceph, str(tmp_path / "absent.conf"))
    assert found["libvirt"].verdict == Verdict.FAILURE
    assert "systemctl start libvirtd" in found["libvirt"].detail
    assert not [name for name in found if name.startswith(("guest agent", "pool"))]
    assert found["ceph"].verdict == Verdict.OK and ceph.asked == []  # no cluster configured


def test_a_domain_gone_before_its_guest_agent_answers_is_a_warning(tmp_path: Path) -> None:
    class Gone(Host):
        def list_domains(self, include_inactive: bool) -> list[tuple[str, str, DomainState]]:
            return [("gone", "u3", DomainState.RUNNING)]

    def no_domain(domain: str) -> Guest:
        raise NotFound(f"domain {domain!r} not found")

    config = AgentConfig(state_dir=tmp_path, ceph_conf=str(tmp_path / "absent.conf"))
    found = run_checks(config, Adapters(Gone(), no_domain, Ceph()), "s", "a", lambda: None)
    assert [c.verdict for c in found if c.name == "guest agent gone"] == [Verdict.WARNING]
