"""The systemd units as shipped (packaging/systemd/): no restart loop on a bad configuration,
and the agent starts after the remote file systems its recovery reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.main import main as controller_main

UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"


def directives(unit: str) -> dict[str, list[str]]:
    """Key -> values of every line of the unit (a key may repeat; lists are split)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).extend(value.split())
    return found


@pytest.mark.parametrize("unit", ["hostsnap-agent.service", "hostsnap-controller.service"])
def test_a_configuration_error_is_not_restarted(unit: str):
    found = directives(unit)

    assert found["Restart"] == ["on-failure"]
    assert found["RestartPreventExitStatus"] == [str(os.EX_CONFIG)] == ["78"]
    # systemd looks at the main process's status only: an ExecStartPre= that fails on a bad
    # configuration would be restarted every RestartSec= for ever.
    assert "ExecStartPre" not in found


def test_the_agent_starts_after_the_network_remote_file_systems_and_libvirt():
    found = directives("hostsnap-agent.service")

    assert {"network-online.target", "remote-fs.target", "libvirtd.service"} <= set(found["After"])
    assert found["Wants"] == ["network-online.target"]


def test_the_controller_service_exits_ex_config_on_a_bad_configuration(tmp_path: Path, capsys):
    config = tmp_path / "controller.toml"
    config.write_text("[cloudstack]\nurl = 'http://cloudstack'\n[dispatch]\nper_hots = 2\n")

    assert controller_main(["serve", "--config", str(config)]) == os.EX_CONFIG
    assert "unknown keys: per_hots" in capsys.readouterr().err


def test_the_guests_the_agent_left_frozen_are_thawed_after_any_end_of_it():
    found = directives("hostsnap-agent.service")

    # ExecStopPost= runs after the main process ended however it ended, before a restart.
    start, stop_post = found["ExecStart"], found["ExecStopPost"]
    assert stop_post == [*start, "--thaw-after-exit"]
