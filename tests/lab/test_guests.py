"""The lab's guests boot, run their guest agent, and their writer keeps writing."""

from __future__ import annotations

import time

import libvirt
import pytest

from hostsnap_lab import guest_agent
from hostsnap_lab.lab import Lab

DOMAINS = ("lab-qcow2", "lab-rbd")


@pytest.mark.parametrize("name", DOMAINS)
def test_guest_is_running_and_answers_guest_ping(lab: Lab, conn: libvirt.virConnect, name: str):
    dom = conn.lookupByName(name)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert guest_agent.command(dom, "guest-ping") == {}


@pytest.mark.parametrize("name", DOMAINS)
def test_guest_writer_keeps_writing_to_its_disk(lab: Lab, conn: libvirt.virConnect, name: str):
    dom = conn.lookupByName(name)
    first = int(guest_agent.exec_in_guest(dom, ["/bin/cat", "/data/writer.seq"]))
    deadline = time.monotonic() + 30
    while (now := int(guest_agent.exec_in_guest(dom, ["/bin/cat", "/data/writer.seq"]))) <= first:
        assert time.monotonic() < deadline, f"{name}: writer.seq stuck at {first}"
        time.sleep(0.5)
    assert now > first
