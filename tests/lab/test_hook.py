"""The libvirt qemu hook refuses to boot a domain from a layer that is no longer active."""

from __future__ import annotations

import libvirt
import pytest

from agent.hypervisor.domain_xml import with_disk_source
from agent.model import Quiesce, SnapshotRequest
from agent.operations import snapshot
from agent.operations.services import Services

from .support import disk_source, has_marker, start, stop, write_marker


def test_start_from_the_recorded_old_path_is_refused_and_from_the_active_image_boots(
    conn: libvirt.virConnect, svc: Services
):
    dom = conn.lookupByName("lab-qcow2")
    recorded = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # what CloudStack would keep
    old_path = disk_source(dom)
    result = snapshot.create(svc, SnapshotRequest("lab-qcow2", quiesce=Quiesce.REQUIRED))
    active = result.disks[0].active_image
    write_marker(dom, "written-after-snapshot")
    stop(dom)
    try:
        conn.defineXML(recorded)
        with pytest.raises(libvirt.libvirtError) as refused:
            dom.create()
        message = str(refused.value)
        assert f"disk vda points at {old_path}" in message
        assert f"the active image is {active}" in message
        assert not dom.isActive()
    finally:
        conn.defineXML(with_disk_source(recorded, "vda", active))
        start(dom)
    assert has_marker(dom, "written-after-snapshot")
