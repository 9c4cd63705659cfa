"""Disks and chains read from libvirt domain XML."""

from __future__ import annotations

import pytest

from agent.errors import NotFound
from agent.hypervisor import domain_xml
from agent.model import VolumeKind

XML = """<domain type='kvm'><name>i-2-10-VM</name><devices>
  <disk type='file' device='disk'>
    <driver name='qemu' type='qcow2'/>
    <source file='/mnt/pool/vol.hostsnap-b'/>
    <backingStore type='file'><format type='qcow2'/><source file='/mnt/pool/vol.hostsnap-a'/>
      <backingStore type='file'><format type='qcow2'/><source file='/mnt/pool/vol'/>
        <backingStore/></backingStore></backingStore>
    <target dev='vda' bus='virtio'/>
    <mirror type='file' job='active-commit' ready='yes'><source file='/mnt/pool/vol'/></mirror>
  </disk>
  <disk type='network' device='disk'>
    <driver name='qemu' type='raw'/>
    <source protocol='rbd' name='cloudstack/3f2a'>
      <host name='10.0.0.1' port='6789'/><host name='10.0.0.2'/>
      <config file='/etc/ceph/ceph.conf'/>
    </source>
    <target dev='vdb' bus='virtio'/>
  </disk>
  <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
</devices></domain>"""


def test_file_and_rbd_disks_are_found_and_cdroms_ignored():
    file_disk, rbd_disk = domain_xml.volumes("i-2-10-VM", XML)
    assert (file_disk.target, file_disk.kind, file_disk.format) == ("vda", VolumeKind.FILE, "qcow2")
    assert file_disk.path == "/mnt/pool/vol.hostsnap-b"
    assert file_disk.key == "i-2-10-VM/vda"
    assert rbd_disk.kind == VolumeKind.RBD and rbd_disk.location == "cloudstack/3f2a"
    assert rbd_disk.rbd is not None
    assert rbd_disk.rbd.monitors == ("10.0.0.1:6789", "10.0.0.2:6789")
    assert rbd_disk.rbd.config_file == "/etc/ceph/ceph.conf"


def test_all_targets_include_the_disks_hostsnap_does_not_snapshot():
    assert domain_xml.all_targets(XML) == ["vda", "vdb", "hdc"]


def test_backing_chain_is_read_active_first():
    assert domain_xml.backing_chain(XML, "vda") == [
        "/mnt/pool/vol.hostsnap-b",
        "/mnt/pool/vol.hostsnap-a",
        "/mnt/pool/vol",
    ]


def test_mirror_readiness_is_read_from_the_disk():
    assert domain_xml.mirror_ready(XML, "vda")
    assert not domain_xml.mirror_ready(XML.replace("ready='yes'", ""), "vda")


def test_with_disk_source_points_the_disk_at_a_new_image_and_drops_the_old_chain():
    updated = domain_xml.with_disk_source(XML, "vda", "/mnt/pool/vol.hostsnap-c")
    assert domain_xml.backing_chain(updated, "vda") == ["/mnt/pool/vol.hostsnap-c"]
    with pytest.raises(NotFound):
        domain_xml.with_disk_source(XML, "vdz", "/x")
