"""The libvirt qemu hook refuses to boot a domain from a layer that is no longer active."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

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


def _through_symlinked_directory(old_path: str, tmp_path: Path) -> str:
    link = tmp_path / "pool-link"
    link.symlink_to(Path(old_path).parent)
    return str(link / Path(old_path).name)


def _as_hard_link(old_path: str, tmp_path: Path) -> str:
    alias = f"{old_path}.alias"
    os.link(old_path, alias)
    return alias


@pytest.mark.parametrize(
    "respell",
    [_through_symlinked_directory, _as_hard_link],
    ids=["through a symlinked directory", "as a hard link"],
)
def test_the_old_layer_named_another_way_is_refused_too(
    conn: libvirt.virConnect, svc: Services, tmp_path: Path, respell: Callable[[str, Path], str]
):
    dom = conn.lookupByName("lab-qcow2")
    recorded = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    old_path = disk_source(dom)
    result = snapshot.create(svc, SnapshotRequest("lab-qcow2", quiesce=Quiesce.REQUIRED))
    active = result.disks[0].active_image
    other_name = respell(old_path, tmp_path)
    stop(dom)
    try:
        conn.defineXML(with_disk_source(recorded, "vda", other_name))
        with pytest.raises(libvirt.libvirtError) as refused:
            dom.create()
        message = str(refused.value)
        assert f"disk vda points at {other_name} (the same file as {old_path})" in message
        assert f"the active image is {active}" in message
        assert not dom.isActive()
    finally:
        conn.defineXML(with_disk_source(recorded, "vda", active))
        if other_name.endswith(".alias"):
            os.unlink(other_name)
        start(dom)
