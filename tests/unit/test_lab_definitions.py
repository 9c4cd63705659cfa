"""What the lab hands to libvirt and Ceph: checked without starting anything."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from hostsnap_lab import ceph, domains, guest_image
from hostsnap_lab.paths import LabPaths

PATHS = LabPaths(Path("/srv/lab dir"))


def parse(domain: domains.LabDomain) -> ET.Element:
    return ET.fromstring(domains.domain_xml(PATHS, domain))


def test_domains_use_tcg_and_a_guest_agent_channel():
    for domain in (domains.qcow2_domain(PATHS), domains.rbd_domain(PATHS)):
        root = parse(domain)
        assert root.get("type") == "qemu"
        assert root.findtext("name") == domain.name
        channel = root.find("devices/channel/target")
        assert channel is not None and channel.get("name") == "org.qemu.guest_agent.0"
        assert root.find("devices/controller[@type='virtio-serial']") is not None
        assert root.findtext("os/kernel") == str(PATHS.kernel)


def test_qcow2_domain_disk_is_the_pool_file():
    disk = parse(domains.qcow2_domain(PATHS)).find("devices/disk")
    assert disk is not None
    assert disk.get("type") == "file"
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disk.find("source").get("file") == "/srv/lab dir/pool/lab-qcow2.qcow2"  # type: ignore[union-attr]


def test_rbd_domain_disk_is_the_rbd_image_on_loopback():
    source = parse(domains.rbd_domain(PATHS)).find("devices/disk/source")
    assert source is not None
    assert (source.get("protocol"), source.get("name")) == ("rbd", "rbd/lab-rbd")
    assert source.find("host").attrib == {"name": "127.0.0.1", "port": "3300"}  # type: ignore[union-attr]
    assert source.find("config").get("file") == str(PATHS.ceph_conf)  # type: ignore[union-attr]


def test_ceph_config_is_loopback_only_auth_none_memstore():
    conf = ceph.render_conf(Path("/srv/ceph"), "fsid-1")
    lines = {
        key.strip(): value.strip()
        for key, _, value in (line.partition("=") for line in conf.splitlines() if "=" in line)
    }
    assert lines["mon host"] == "v2:127.0.0.1:3300"
    assert lines["public addr"] == "127.0.0.1"
    assert lines["ms bind ipv6"] == "false"
    assert {lines[f"auth {k} required"] for k in ("cluster", "service", "client")} == {"none"}
    assert lines["osd objectstore"] == "memstore"
    assert lines["osd data"].startswith("/srv/ceph/")


def test_guest_init_loads_modules_in_dependency_order():
    init = guest_image.render_init()
    loaded = init.split("for m in ", 1)[1].split(";", 1)[0].split()
    assert loaded == list(guest_image.MODULES)
    assert loaded.index("virtio_ring") < loaded.index("virtio") < loaded.index("virtio_blk")
    assert loaded.index("jbd2") < loaded.index("ext4")


def test_guest_build_stamp_changes_with_the_kernel():
    assert guest_image.build_stamp("6.1.0-1") != guest_image.build_stamp("6.1.0-2")
