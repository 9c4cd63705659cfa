"""libvirt's fsFreeze/fsThaw really freeze and thaw the lab guests' filesystems."""

from __future__ import annotations

import itertools
import time

import libvirt
import pytest

from hostsnap_lab import guest_agent
from hostsnap_lab.lab import Lab

FROZEN_SECONDS = 3.0


def writer_timestamps(dom: libvirt.virDomain) -> list[int]:
    log = guest_agent.exec_in_guest(dom, ["/bin/tail", "-n", "200", "/data/writer.log"])
    return [int(line.split()[1]) for line in log.splitlines() if len(line.split()) == 2]


@pytest.mark.parametrize("name", ["lab-qcow2", "lab-rbd"])
def test_fsfreeze_and_fsthaw_are_confirmed_by_the_guest_agent(
    lab: Lab, conn: libvirt.virConnect, name: str
):
    dom = conn.lookupByName(name)
    assert guest_agent.fsfreeze_status(dom) == "thawed"
    # The writer stamps its lines with the guest's clock, which a TCG guest under load lets
    # fall seconds behind the host's: the freeze is placed on the guest's clock too.
    frozen_at = int(guest_agent.exec_in_guest(dom, ["/bin/date", "+%s"]).strip())
    try:
        assert dom.fsFreeze() >= 1  # the data disk's ext4
        assert guest_agent.fsfreeze_status(dom) == "frozen"
        time.sleep(FROZEN_SECONDS)
    finally:
        thawed = dom.fsThaw()
    assert thawed >= 1
    assert guest_agent.fsfreeze_status(dom) == "thawed"

    # The writer was stalled while frozen: its log shows a gap of about the frozen time
    # around the freeze (it writes several lines a second otherwise).
    deadline = time.monotonic() + 30
    while not [t for t in writer_timestamps(dom) if t > frozen_at + FROZEN_SECONDS]:
        assert time.monotonic() < deadline, f"{name}: the writer did not resume after thaw"
        time.sleep(0.5)
    stamps = writer_timestamps(dom)
    gaps = [b - a for a, b in itertools.pairwise(stamps) if b >= frozen_at]
    assert max(gaps) >= FROZEN_SECONDS - 1, f"{name}: no stall in the writer's log: {stamps}"
