"""Reads and rewrites libvirt domain XML: the disks, their backing chains, block-job mirrors."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agent.errors import NotFound
from agent.model import RbdSource, Volume, VolumeKind


def _disk_elements(root: ET.Element) -> list[ET.Element]:
    return [d for d in root.findall("devices/disk") if d.get("device", "disk") == "disk"]


def volumes(domain: str, xml: str) -> list[Volume]:
    """The domain's disks that hostsnap can snapshot: qcow2/raw files and RBD network disks."""
    found = []
    for disk in _disk_elements(ET.fromstring(xml)):
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        if target is None or source is None:
            continue  # e.g. an empty cdrom-like slot
        dev = target.get("dev", "")
        fmt = driver.get("type", "raw") if driver is not None else "raw"
        kind = disk.get("type")
        if kind == "file" and source.get("file"):
            found.append(Volume(domain, dev, VolumeKind.FILE, fmt, path=source.get("file")))
        elif kind == "network" and source.get("protocol") == "rbd":
            pool, _, image = source.get("name", "").partition("/")
            monitors = tuple(
                f"{h.get('name')}:{h.get('port', '6789')}" for h in source.findall("host")
            )
            config = source.find("config")
            found.append(
                Volume(
                    domain,
                    dev,
                    VolumeKind.RBD,
                    fmt,
                    rbd=RbdSource(
                        pool, image, monitors, config.get("file") if config is not None else None
                    ),
                )
            )
    return found


def all_targets(xml: str) -> list[str]:
    """Every disk device's target (cdroms and unsupported disks too): a disk-only snapshot
    must name each one, or libvirt applies its default snapshot mode to it."""
    root = ET.fromstring(xml)
    return [t.get("dev", "") for t in root.findall("devices/disk/target") if t.get("dev")]


def _disk(root: ET.Element, target: str) -> ET.Element:
    for disk in _disk_elements(root):
        t = disk.find("target")
        if t is not None and t.get("dev") == target:
            return disk
    raise NotFound(f"the domain has no disk {target!r}")


def backing_chain(xml: str, target: str) -> list[str]:
    """The file chain of a disk as libvirt reports it for a running domain, active first."""
    disk = _disk(ET.fromstring(xml), target)
    chain = []
    node: ET.Element | None = disk
    while node is not None:
        source = node.find("source")
        if source is None or not source.get("file"):
            break
        chain.append(source.get("file", ""))
        node = node.find("backingStore")
    return chain


def mirror_job(xml: str, target: str) -> str | None:
    """The kind of block job mirroring the disk ("active-commit", "copy", ...), if any."""
    mirror = _disk(ET.fromstring(xml), target).find("mirror")
    return None if mirror is None else mirror.get("job")


def mirror_ready(xml: str, target: str) -> bool:
    """True when the disk's block-job mirror is marked ready (safe to pivot)."""
    mirror = _disk(ET.fromstring(xml), target).find("mirror")
    return mirror is not None and mirror.get("ready") == "yes"


def with_disk_source(xml: str, target: str, path: str, driver_type: str | None = None) -> str:
    """The domain XML with one file disk pointed at a new active image (its stale
    backingStore description dropped, so libvirt reads the chain from the image itself),
    and the image's format set when given."""
    root = ET.fromstring(xml)
    disk = _disk(root, target)
    source = disk.find("source")
    if source is None or disk.get("type") != "file":
        raise NotFound(f"disk {target!r} is not a file disk")
    source.set("file", path)
    driver = disk.find("driver")
    if driver_type is not None and driver is not None:
        driver.set("type", driver_type)
    for stale in disk.findall("backingStore"):
        disk.remove(stale)
    return ET.tostring(root, encoding="unicode")


def disk_element(xml: str, target: str) -> str:
    """One disk's element as XML text (to put it back later with `with_disk_element`)."""
    return ET.tostring(_disk(ET.fromstring(xml), target), encoding="unicode")


def with_disk_element(xml: str, target: str, element: str) -> str:
    """The domain XML with the disk of `target` replaced by `element`."""
    root = ET.fromstring(xml)
    old = _disk(root, target)
    devices = root.find("devices")
    assert devices is not None
    new = ET.fromstring(element)
    new.tail = old.tail
    devices[list(devices).index(old)] = new
    return ET.tostring(root, encoding="unicode")
