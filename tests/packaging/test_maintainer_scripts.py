"""What the packages' maintainer scripts, as built, ask of systemd on install, upgrade and
remove (tests/packaging/fake_host.py records it; nothing runs on this machine): an upgrade
restarts what runs, a remove stops it, a disabled controller is never started."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Built
from .fake_host import FakeHost, deb_scripts, rpm_scriptlets

CONTROLLER = "hostsnap-controller.service"
OLD = "0.0.9"  # the version an upgrade comes from
NEW = "0.1.0"


@pytest.fixture
def controller_deb(built: Built, tmp_path: Path) -> dict[str, str]:
    return deb_scripts(built.deb("hostsnap-controller"), tmp_path / "control")


def host(tmp_path: Path, enabled: set[str], active: set[str]) -> FakeHost:
    return FakeHost(tmp_path / "host", enabled=enabled, active=active)


def test_first_install_of_the_controller_deb_starts_nothing(controller_deb, tmp_path):
    fake = host(tmp_path, enabled=set(), active=set())

    fake.run(controller_deb["postinst"], "configure", "")

    assert fake.actions([CONTROLLER]) == []


def test_apt_upgrade_restarts_an_enabled_running_controller(controller_deb, tmp_path):
    fake = host(tmp_path, enabled={CONTROLLER}, active={CONTROLLER})

    # dpkg's order: old-prerm upgrade NEW, (unpack), new-postinst configure OLD.
    fake.run(controller_deb["prerm"], "upgrade", NEW)
    fake.run(controller_deb["postinst"], "configure", OLD)

    assert fake.actions([CONTROLLER]) == [("restart", CONTROLLER)]


def test_apt_upgrade_leaves_a_disabled_stopped_controller_stopped(controller_deb, tmp_path):
    fake = host(tmp_path, enabled=set(), active=set())

    fake.run(controller_deb["prerm"], "upgrade", NEW)
    fake.run(controller_deb["postinst"], "configure", OLD)

    assert fake.actions([CONTROLLER]) == []


def test_apt_remove_stops_the_controller(controller_deb, tmp_path):
    fake = host(tmp_path, enabled={CONTROLLER}, active={CONTROLLER})

    fake.run(controller_deb["prerm"], "remove")
    fake.run(controller_deb["postrm"], "remove")

    assert fake.actions([CONTROLLER]) == [("stop", CONTROLLER)]


def test_rpm_upgrade_restarts_a_running_controller_and_erase_stops_it(built: Built, tmp_path):
    scripts = rpm_scriptlets(built.rpm("hostsnap-controller"))
    upgrade = host(tmp_path / "upgrade", enabled={CONTROLLER}, active={CONTROLLER})

    # rpm's order: new %pre 2, new %post 2, old %preun 1, old %postun 1.
    for tag in ("PREIN", "POSTIN", "PREUN", "POSTUN"):
        upgrade.run(scripts[tag], "2" if tag in ("PREIN", "POSTIN") else "1")
    erase = host(tmp_path / "erase", enabled={CONTROLLER}, active={CONTROLLER})
    erase.run(scripts["PREUN"], "0")
    erase.run(scripts["POSTUN"], "0")

    assert upgrade.actions([CONTROLLER]) == [("try-restart", CONTROLLER)]
    assert erase.actions([CONTROLLER]) == [("disable", CONTROLLER)]
    assert ["systemctl", "--no-reload", "disable", "--now", CONTROLLER] in erase.calls()


AGENT = "hostsnap-agent.service"
DRAIN = ("hostsnap-agent", "--config", "/etc/hostsnap/agent.toml", "--drain")


@pytest.fixture
def agent_deb(built: Built, tmp_path: Path) -> dict[str, str]:
    return deb_scripts(built.deb("hostsnap-agent"), tmp_path / "control")


@pytest.mark.parametrize("drained", [0, 1, 78], ids=["drained", "timed out", "bad config"])
def test_apt_upgrade_drains_the_agent_then_restarts_it(agent_deb, tmp_path, drained: int):
    fake = host(tmp_path, enabled={AGENT}, active={AGENT})
    fake.agent_exit = drained

    fake.run(agent_deb["prerm"], "upgrade", NEW)
    fake.run(agent_deb["postinst"], "configure", OLD)

    # Drained or not, the upgrade goes on: the restart is what ends the drain.
    assert fake.actions([AGENT]) == [DRAIN, ("restart", AGENT)]


def test_apt_remove_drains_the_agent_then_stops_it(agent_deb, tmp_path):
    fake = host(tmp_path, enabled={AGENT}, active={AGENT})

    fake.run(agent_deb["prerm"], "remove")
    fake.run(agent_deb["postrm"], "remove")

    assert fake.actions([AGENT]) == [DRAIN, ("stop", AGENT)]


def test_a_failed_upgrade_restarts_the_drained_agent(agent_deb, tmp_path):
    fake = host(tmp_path, enabled={AGENT}, active={AGENT})

    # dpkg's order when the new package fails to unpack: old-postinst abort-upgrade NEW.
    fake.run(agent_deb["prerm"], "upgrade", NEW)
    fake.run(agent_deb["postinst"], "abort-upgrade", NEW)

    assert fake.actions([AGENT]) == [DRAIN, ("restart", AGENT)]


def test_first_install_of_the_agent_deb_starts_it_without_a_drain(agent_deb, tmp_path):
    fake = host(tmp_path, enabled={AGENT}, active=set())

    fake.run(agent_deb["postinst"], "configure", "")

    assert fake.actions([AGENT]) == [("start", AGENT)]


def test_rpm_upgrade_drains_the_agent_before_it_restarts_it_and_erase_before_the_stop(
    built: Built, tmp_path
):
    scripts = rpm_scriptlets(built.rpm("hostsnap-agent"))
    upgrade = host(tmp_path / "upgrade", enabled={AGENT}, active={AGENT})

    for tag in ("PREIN", "POSTIN", "PREUN", "POSTUN"):
        upgrade.run(scripts[tag], "2" if tag in ("PREIN", "POSTIN") else "1")
    erase = host(tmp_path / "erase", enabled={AGENT}, active={AGENT})
    erase.run(scripts["PREUN"], "0")
    erase.run(scripts["POSTUN"], "0")
    install = host(tmp_path / "install", enabled=set(), active=set())
    install.run(scripts["PREIN"], "1")
    install.run(scripts["POSTIN"], "1")

    assert upgrade.actions([AGENT]) == [DRAIN, ("try-restart", AGENT)]
    assert erase.actions([AGENT]) == [DRAIN, ("disable", AGENT)]
    assert install.actions([AGENT]) == [("preset", AGENT)]
